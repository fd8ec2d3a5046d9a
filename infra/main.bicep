// Slipway on Azure, in one resource group: `azd up` provisions this and deploys the app.
//
// Function app (Flex Consumption, Python 3.11, user-assigned identity, identity-based
// connections), the Service Bus build queue, host storage with the ledger and state containers,
// a separate storage account for BuildKit's azblob cache (its key in Key Vault), Application
// Insights on Log Analytics, role assignments at the narrowest scope (app/rbac.bicep,
// app/registry.bicep) and, optionally, a new registry and an Event Grid subscription.
//
// Azure Verified Modules pinned here: avm/res/managed-identity/user-assigned-identity 0.4.1,
// avm/res/web/serverfarm 0.1.1, avm/res/storage/storage-account 0.8.3,
// avm/res/operational-insights/workspace 0.7.0, avm/res/insights/component 0.4.1.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds a short unique token used in every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource (a region with Flex Consumption).')
@allowed([
  'australiaeast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'westcentralus'
  'westeurope'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the operator (azd fills in the signed-in user): Service Bus Explorer replay, Key Vault secrets, ledger reads. Empty: no operator roles.')
param principalId string = ''

@description('An existing container registry to build with, by name. Empty: a new registry is created in the resource group.')
param registryName string = ''

@description('Resource group of the existing registry. Empty: the resource group created here.')
param registryResourceGroup string = ''

@description('SKU of a new registry (ignored for an existing one). Quarantine needs Premium.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Standard'

@description('Image retention (`images:` in slipway.yaml): grants AcrPull + AcrDelete on the registry.')
param enableImageRetention bool = false

@description('ACR quarantine (`quarantine: true`): grants AcrQuarantineWriter on the registry.')
param enableQuarantine bool = false

@description('BuildKit azblob cache: a separate storage account, its key in Key Vault.')
param enableCache bool = true

@description('Subscribe the registry image-pushed events to /api/hooks/eventgrid. Needs the app deployed first (Event Grid validates the endpoint).')
param enableEventGrid bool = false

@secure()
@description('Token of the Event Grid endpoint URL (EVENTGRID_WEBHOOK_TOKEN); stored in Key Vault. Required with enableEventGrid.')
param eventGridWebhookToken string = ''

@description('Secret app settings resolved from Key Vault references: put each value in the vault as a secret named like the setting in lowercase with dashes (GITHUB_WEBHOOK_SECRET -> github-webhook-secret).')
param secretSettings array = [
  'GITHUB_WEBHOOK_SECRET'
]

@description('Plain (not secret) app settings to add, as a JSON object (azd: SLIPWAY_EXTRA_APP_SETTINGS). Names the template sets and names that look like secrets (SECRET, TOKEN, PASSWORD, KEY, CONNECTION) fail the deployment: secrets go in secretSettings.')
param extraAppSettings object = {}

@description('Name of the Service Bus build queue (BUILD_QUEUE).')
param buildQueueName string = 'build-requests'

@description('Blob container of the dispatch ledger (SLIPWAY_LEDGER_CONTAINER).')
param ledgerContainerName string = 'slipway-ledger'

@description('Blob container of the small state documents (SLIPWAY_STATE_CONTAINER).')
param stateContainerName string = 'slipway-state'

@description('Blob container of the BuildKit cache in the cache account.')
param cacheContainerName string = 'buildkit-cache'

@description('Service Bus tier: Basic has no duplicate detection, so it is not offered.')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Most instances the app scales out to (Flex Consumption).')
param maximumInstanceCount int = 40

@description('Memory of each instance in MB (Flex Consumption).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}slipway-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var createRegistry = empty(registryName)
var effectiveRegistryName = createRegistry ? '${abbrs.containerRegistryRegistries}slipway${resourceToken}' : registryName
var effectiveRegistryGroup = empty(registryResourceGroup) ? rg.name : registryResourceGroup

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}slipway-${resourceToken}'
    location: location
    tags: tags
  }
}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

// Host storage: the Functions host (locks, timers, keys), the deployment package, the ledger
// and the state documents. Identity only: no shared keys.
module hostStorage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'hostStorage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentContainerName
        }
        {
          name: ledgerContainerName
        }
        {
          name: stateContainerName
        }
      ]
    }
  }
}

// BuildKit's azblob cache needs an account key (or a service principal), so it gets its own
// account: the key opens the cache and nothing else. The key goes to Key Vault (app/keyvault.bicep).
module cacheStorage 'br/public:avm/res/storage/storage-account:0.8.3' = if (enableCache) {
  name: 'cacheStorage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}cache${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    blobServices: {
      containers: [
        {
          name: cacheContainerName
        }
      ]
    }
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module appInsights 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'appInsights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'serviceBus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}${resourceToken}'
    location: location
    tags: tags
    sku: serviceBusSku
    queueName: buildQueueName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    cacheStorageAccountName: enableCache ? cacheStorage.outputs.name : ''
    eventGridWebhookToken: enableEventGrid ? eventGridWebhookToken : ''
  }
}

module function 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    planId: plan.outputs.resourceId
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    hostStorageAccountName: hostStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: appInsights.outputs.connectionString
    serviceBusNamespace: serviceBus.outputs.fullyQualifiedNamespace
    buildQueueName: serviceBus.outputs.queueName
    ledgerContainerName: ledgerContainerName
    stateContainerName: stateContainerName
    registrySubscriptionId: subscription().subscriptionId
    registryResourceGroup: effectiveRegistryGroup
    registryName: effectiveRegistryName
    keyVaultName: keyVault.outputs.name
    cacheKeySecretName: enableCache ? keyVault.outputs.cacheKeySecretName : ''
    eventGridTokenSecretName: enableEventGrid ? keyVault.outputs.eventGridTokenSecretName : ''
    secretSettings: secretSettings
    extraAppSettings: extraAppSettings
    enableImageRetention: enableImageRetention
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    hostStorageAccountName: hostStorage.outputs.name
    ledgerContainerName: ledgerContainerName
    stateContainerName: stateContainerName
    cacheStorageAccountName: enableCache ? cacheStorage.outputs.name : ''
    cacheContainerName: cacheContainerName
    serviceBusNamespaceName: serviceBus.outputs.name
    buildQueueName: serviceBus.outputs.queueName
    keyVaultName: keyVault.outputs.name
    appInsightsName: appInsights.outputs.name
  }
}

module registry 'app/registry.bicep' = {
  name: 'registry'
  scope: resourceGroup(effectiveRegistryGroup)
  params: {
    name: effectiveRegistryName
    create: createRegistry
    location: location
    tags: tags
    sku: enableQuarantine ? 'Premium' : registrySku
    appPrincipalId: identity.outputs.principalId
    enableImageRetention: enableImageRetention
    enableQuarantine: enableQuarantine
    enableEventGrid: enableEventGrid
    eventGridEndpoint: 'https://${function.outputs.defaultHostName}/api/hooks/eventgrid'
    eventGridWebhookToken: eventGridWebhookToken
  }
}

// Outputs azd keeps in .azure/<env>/.env: names and endpoints only, never a key or a token.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = function.outputs.name
output SLIPWAY_FUNCTION_URL string = 'https://${function.outputs.defaultHostName}'
output SLIPWAY_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output SLIPWAY_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output SLIPWAY_BUILD_QUEUE string = serviceBus.outputs.queueName
output SLIPWAY_STORAGE_ACCOUNT string = hostStorage.outputs.name
output SLIPWAY_CACHE_ACCOUNT_URL string = enableCache ? 'https://${cacheStorage.outputs.name}.blob.${environment().suffixes.storage}' : ''
output SLIPWAY_CACHE_CONTAINER string = enableCache ? cacheContainerName : ''
output SLIPWAY_KEY_VAULT_NAME string = keyVault.outputs.name
output SLIPWAY_REGISTRY string = effectiveRegistryName
output SLIPWAY_REGISTRY_RESOURCE_GROUP string = effectiveRegistryGroup
output APPLICATIONINSIGHTS_NAME string = appInsights.outputs.name
