// The registry that runs the builds (an existing one, or a new one), the app identity's roles on
// it, and the optional Event Grid subscription of its image-pushed events. Deployed in the
// registry's own resource group, so an existing registry elsewhere works too.
param name string

@description('True: create the registry; false: it exists already.')
param create bool
param location string
param tags object = {}

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param sku string = 'Standard'
param appPrincipalId string
param enableImageRetention bool = false
param enableQuarantine bool = false
param enableEventGrid bool = false

@description('https://<app>/api/hooks/eventgrid (the token is added here).')
param eventGridEndpoint string

@secure()
param eventGridWebhookToken string = ''

// Built-in role ids: the ID column of https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// (Containers); tests/test_infra.py holds them as taken from that page.
var roles = {
  containerRegistryTasksContributor: 'fb382eab-e894-4461-af04-94435c366c3f'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  acrDelete: 'c2f4ef07-c644-48eb-af81-4b1b4947fb11'
  acrQuarantineWriter: 'c8d4ff99-41c3-41a8-9f60-21dfdad59608'
}

resource newRegistry 'Microsoft.ContainerRegistry/registries@2023-07-01' = if (create) {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    adminUserEnabled: false
    policies: enableQuarantine
      ? {
          quarantinePolicy: {
            status: 'enabled'
          }
        }
      : {}
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: name
}

// scheduleRun, runs/read, runs/listLogSasUrl, runs/cancel: starting and following builds.
resource tasks 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, roles.containerRegistryTasksContributor)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.containerRegistryTasksContributor)
  }
  dependsOn: [
    newRegistry
  ]
}

// Base-image digest polling (HEAD on manifests) and image retention's listing.
resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, roles.acrPull)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
  dependsOn: [
    newRegistry
  ]
}

// Image retention deletes manifests and tags: only when it is turned on.
resource delete 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableImageRetention) {
  name: guid(registry.id, appPrincipalId, roles.acrDelete)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrDelete)
  }
  dependsOn: [
    newRegistry
  ]
}

// Marks a passed run's digests `Passed`: only with quarantine on.
resource quarantine 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableQuarantine) {
  name: guid(registry.id, appPrincipalId, roles.acrQuarantineWriter)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrQuarantineWriter)
  }
  dependsOn: [
    newRegistry
  ]
}

resource pushedEvents 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = if (enableEventGrid) {
  name: 'evgt-${name}'
  location: location
  tags: tags
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
  dependsOn: [
    newRegistry
  ]
}

// Event Grid validates the endpoint when the subscription is created, so the app must be
// deployed first (see the README: enable it after the first `azd up`).
resource pushedToSlipway 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = if (enableEventGrid) {
  parent: pushedEvents
  name: 'slipway-image-pushed'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${eventGridEndpoint}?token=${eventGridWebhookToken}'
        maxEventsPerBatch: 10
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.ContainerRegistry.ImagePushed'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = registry.name
output loginServer string = registry.properties.loginServer
