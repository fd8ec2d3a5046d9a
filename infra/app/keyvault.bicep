// Key Vault for the secrets the app reads through Key Vault references: the cache account key
// (taken from the account here, so it never passes through a parameter or an output), the Event
// Grid endpoint token, and the webhook secrets an operator adds (`az keyvault secret set`).
param name string
param location string
param tags object = {}

@description('The cache storage account whose key BuildKit needs; empty: no cache secret.')
param cacheStorageAccountName string = ''

@secure()
@description('Token of the Event Grid endpoint; empty: no secret.')
param eventGridWebhookToken string = ''

var cacheKeySecretName = 'slipway-cache-account-key'
var eventGridTokenSecretName = 'eventgrid-webhook-token'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access by Azure RBAC (app/rbac.bicep), not by access policies.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource cacheAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (!empty(cacheStorageAccountName)) {
  name: cacheStorageAccountName
}

resource cacheKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(cacheStorageAccountName)) {
  parent: vault
  name: cacheKeySecretName
  properties: {
    value: cacheAccount.listKeys().keys[0].value
    contentType: 'BuildKit azblob cache: account key of ${cacheStorageAccountName}'
  }
}

resource eventGridToken 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(eventGridWebhookToken)) {
  parent: vault
  name: eventGridTokenSecretName
  properties: {
    value: eventGridWebhookToken
  }
}

output name string = vault.name
output cacheKeySecretName string = cacheKeySecretName
output eventGridTokenSecretName string = eventGridTokenSecretName
