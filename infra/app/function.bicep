// The function app on Flex Consumption: Python 3.11, the user-assigned identity, identity-based
// connections, and every app setting the code reads (tests/test_infra.py checks the list against
// the code; settings left out are listed there as optional, with the reason). Plain optional
// settings come in through extraAppSettings, secret ones through secretSettings (Key Vault).
param name string
param location string
param tags object = {}
param planId string
param identityId string
param identityClientId string
param hostStorageAccountName string
param deploymentContainerName string
param appInsightsConnectionString string
param serviceBusNamespace string
param buildQueueName string
param ledgerContainerName string
param stateContainerName string
param registrySubscriptionId string
param registryResourceGroup string
param registryName string
param keyVaultName string

@description('Key Vault secret holding the cache account key; empty: no cache.')
param cacheKeySecretName string = ''

@description('Key Vault secret holding the Event Grid endpoint token; empty: no Event Grid.')
param eventGridTokenSecretName string = ''

@description('App settings whose values are Key Vault references (secret name: lowercase, dashes).')
param secretSettings array = []

@description('Plain (not secret) app settings to add, name -> value: the optional settings the template does not set (GITLAB_API_URL, GITEA_BASE_URL, SLIPWAY_MAX_BODY_BYTES, ...). A name Slipway sets itself, or one that looks like a secret, fails the deployment.')
param extraAppSettings object = {}

param enableImageRetention bool = false
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048

var blobEndpoint = 'https://${hostStorageAccountName}.blob.${environment().suffixes.storage}'

func keyVaultReference(vault string, secret string) string =>
  '@Microsoft.KeyVault(VaultName=${vault};SecretName=${secret})'

var appSettings = {
  // Host storage and the ledger, by identity (the ledger lives in this account).
  AzureWebJobsStorage__accountName: hostStorageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  SLIPWAY_LEDGER_CONTAINER: ledgerContainerName
  SLIPWAY_STATE_CONTAINER: stateContainerName
  // The build queue, by identity.
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  BUILD_QUEUE: buildQueueName
  // The registry that runs the builds, reached with this identity.
  ACR_SUBSCRIPTION_ID: registrySubscriptionId
  ACR_RESOURCE_GROUP: registryResourceGroup
  ACR_NAME: registryName
  AZURE_CLIENT_ID: identityClientId
  SLIPWAY_CONFIG: 'slipway.yaml'
  SLIPWAY_PORTAL_TENANT: tenant().tenantId
  // Timer schedules (6-field NCRONTAB, UTC); a timer whose %SETTING% is missing does not load.
  SLIPWAY_RECONCILE_SCHEDULE: '30 * * * * *'
  SLIPWAY_SCHEDULE_TIMER: '0 * * * * *'
  SLIPWAY_BASE_IMAGE_POLL_SCHEDULE: '0 */15 * * * *'
  SLIPWAY_CACHE_PRUNE_SCHEDULE: '0 30 3 * * *'
  SLIPWAY_IMAGE_PRUNE_SCHEDULE: '0 0 4 * * *'
  // Without the retention roles a prune could only fail: plan and log until they are granted.
  SLIPWAY_IMAGE_PRUNE_DRY_RUN: enableImageRetention ? 'false' : 'true'
  // Logs through the worker's OpenTelemetry exporter, Entra-authenticated, so each log_event's
  // correlation_id is a custom dimension (host.json telemetryMode: OpenTelemetry).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

var cacheSettings = empty(cacheKeySecretName)
  ? {}
  : {
      SLIPWAY_CACHE_ACCOUNT_KEY: keyVaultReference(keyVaultName, cacheKeySecretName)
    }

var eventGridSettings = empty(eventGridTokenSecretName)
  ? {}
  : {
      EVENTGRID_WEBHOOK_TOKEN: keyVaultReference(keyVaultName, eventGridTokenSecretName)
    }

var secretSettingValues = toObject(
  secretSettings,
  setting => setting,
  setting => keyVaultReference(keyVaultName, toLower(replace(setting, '_', '-')))
)

// Everything above is Slipway's own: the template owns these names.
var managedSettings = union(appSettings, cacheSettings, eventGridSettings, secretSettingValues)
var managedNames = map(objectKeys(managedSettings), name => toUpper(name))
// An identity-based connection is `<connection>__*`; a plain `<connection>` or another
// `<connection>__*` would change what it connects to.
var managedConnections = map(
  filter(objectKeys(managedSettings), name => contains(name, '__')),
  name => toUpper(split(name, '__')[0])
)

var extraNames = objectKeys(extraAppSettings)
var extraOverriding = filter(
  extraNames,
  name => contains(managedNames, toUpper(name)) || contains(managedConnections, toUpper(split(name, '__')[0]))
)
// Secrets go through Key Vault (secretSettings), never as plain values in a parameter, the
// deployment history or azd's .env file.
var extraSecretLooking = filter(
  extraNames,
  name => contains(toUpper(name), 'SECRET') || contains(toUpper(name), 'TOKEN') || contains(toUpper(name), 'PASSWORD') || contains(toUpper(name), 'KEY') || contains(toUpper(name), 'CONNECTION')
)

// App settings are strings: other values are written as their text (string()).
var extraSettings = !empty(extraOverriding)
  ? fail('extraAppSettings: ${join(extraOverriding, ', ')} set by the template itself; use its parameters instead.')
  : !empty(extraSecretLooking)
      ? fail('extraAppSettings: ${join(extraSecretLooking, ', ')} look like secrets; list them in secretSettings and put the values in Key Vault.')
      : toObject(extraNames, name => name, name => string(extraAppSettings[name]))

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'slipway'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: planId
    httpsOnly: true
    // Key Vault references resolve with the same user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}/${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    // The whole set is replaced on every deployment: a setting added by hand is gone after the next
    // `azd provision`, so plain extras come in through extraAppSettings. Slipway's own come last
    // (union: a later argument wins).
    properties: union(extraSettings, managedSettings)
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
