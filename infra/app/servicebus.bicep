// The Service Bus namespace and the build queue, shaped for Slipway's dispatcher.
//
// The numbers are the ones the code assumes (shared/queue/port.py: QUEUE_LOCK_DURATION,
// QUEUE_MAX_DELIVERY_COUNT, QUEUE_DUPLICATE_DETECTION_WINDOW); tests/test_infra.py compares them.
// Duplicate detection can only be chosen when the queue is created: changing it means a new queue.
param name string
param location string
param tags object = {}

@allowed([
  'Standard'
  'Premium'
])
param sku string = 'Standard'

param queueName string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
  }
  properties: {
    // Identity only: no SAS keys, so no connection string can leak.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: queueName
  properties: {
    // Message ids are deterministic: a sender's retry inside the window is dropped.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    // The host renews the lock while the dispatcher runs; this is how soon a crashed
    // worker's message is handed out again.
    lockDuration: 'PT1M'
    // A refused request is refused again from the ledger on each delivery, then dead-lettered.
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P7D'
    // No sessions: the portal's Service Bus Explorer cannot replay on a session queue.
    requiresSession: false
    enablePartitioning: false
    enableBatchedOperations: true
    maxSizeInMegabytes: 1024
  }
}

output name string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output queueName string = queue.name
