// Role assignments in the app's resource group, one per need, each at the narrowest scope that
// works: the queue, the container, the vault, the component. Never Owner, Contributor or User
// Access Administrator (tests/test_infra.py refuses any id not in its table of documented roles).
// The registry's roles are in registry.bicep, deployed where the registry lives.
param appPrincipalId string

@description('The operator (Service Bus Explorer replay, secrets, ledger); empty: none.')
param operatorPrincipalId string = ''

param hostStorageAccountName string
param ledgerContainerName string
param stateContainerName string

@description('Empty: no cache account.')
param cacheStorageAccountName string = ''
param cacheContainerName string
param serviceBusNamespaceName string
param buildQueueName string
param keyVaultName string
param appInsightsName string

// Built-in role ids (the ID column of https://learn.microsoft.com/azure/role-based-access-control/built-in-roles,
// source MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles.md). tests/test_infra.py
// holds the same ids, taken from that page, and refuses any other.
var roles = {
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var withOperator = !empty(operatorPrincipalId)
var withCache = !empty(cacheStorageAccountName)

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource ledgerContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${hostStorageAccountName}/default/${ledgerContainerName}'
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${hostStorageAccountName}/default/${stateContainerName}'
}

resource cacheContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = if (withCache) {
  name: '${cacheStorageAccountName}/default/${cacheContainerName}'
}

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = {
  parent: namespace
  name: buildQueueName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource component 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// --- the function app's identity -----------------------------------------------------------

// Webhooks enqueue; delayed retries and replays send copies.
resource appQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, appPrincipalId, roles.serviceBusDataSender)
  scope: queue
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}

// The dispatcher's trigger, coalescing peeks, replay from the dead-letter sub-queue.
resource appQueueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, appPrincipalId, roles.serviceBusDataReceiver)
  scope: queue
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}

// The Functions host: locks, timer state, keys, the deployment package (AzureWebJobsStorage).
resource appHostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// The dispatch ledger (conditional writes). Also covered by the host role today; kept so the
// ledger stays writable if the host role is ever narrowed or the host storage moves.
resource appLedger 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledgerContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: ledgerContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// Small state documents (last builds, coalescing), as for the ledger.
resource appState 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// The cache collector lists, reads and deletes cache blobs.
resource appCache 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withCache) {
  name: guid(cacheContainer.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: cacheContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// Key Vault references in the app settings (cache key, webhook secrets).
resource appSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// Telemetry to Application Insights with Entra auth (local auth is off).
resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(component.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: component
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// --- the operator ------------------------------------------------------------------------------

// Service Bus Explorer (peek, re-send, receive and complete in the dead-letter sub-queue) needs
// Data Owner on the namespace; `slipway replay` alone would do with Sender + Receiver.
resource operatorServiceBus 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOperator) {
  name: guid(namespace.id, operatorPrincipalId, roles.serviceBusDataOwner)
  scope: namespace
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
  }
}

// Puts the webhook secrets into the vault (`az keyvault secret set`).
resource operatorSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOperator) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

// `slipway runs`, `slipway replay` and `slipway doctor` read and update the ledger.
resource operatorLedger 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOperator) {
  name: guid(ledgerContainer.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: ledgerContainer
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// `slipway doctor` reads the state and cache containers.
resource operatorState 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOperator) {
  name: guid(stateContainer.id, operatorPrincipalId, roles.storageBlobDataReader)
  scope: stateContainer
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}

resource operatorCache 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOperator && withCache) {
  name: guid(cacheContainer.id, operatorPrincipalId, roles.storageBlobDataReader)
  scope: cacheContainer
  properties: {
    principalId: operatorPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}
