// Everything the function app needs, in one resource group: a Flex Consumption plan and the Python 3.11 app,
// its user-assigned managed identity, a storage account reached only by that identity (no keys), Application
// Insights on a Log Analytics workspace, and a Key Vault holding the Dataverse client secret.
//
// Why Flex Consumption: scale to zero and per-execution billing like Consumption, with instance memory up to
// 4 GB (training 1,000,000 opportunities peaks at 3.5 GB, BENCHMARKS.md), managed identity for the deployment
// package, and OpenTelemetry output from the host (host.json telemetryMode).

param location string
param tags object
param resourceToken string
param dataverseUrl string
param dataverseTenantId string
param dataverseClientId string
@secure()
param dataverseClientSecret string
param licenseTier string
param enableEntraAuth bool
param entraAuthClientId string
param principalId string

@allowed([2048, 4096])
@description('Memory of each instance in MB (training is the largest consumer).')
param instanceMemoryMB int = 4096

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 40

var appName = 'func-${resourceToken}'
var deploymentContainer = 'app-package-${resourceToken}'
// Built-in role definition ids (learn.microsoft.com "Azure built-in roles").
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    // Telemetry is accepted only from Entra-authenticated senders: the app's identity (Monitoring Metrics Publisher).
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without virtual network integration (this template) reaches it over its public endpoint; access is by Entra role assignment to the app's identity only (shared keys are off)
  // checkov:skip=CKV_AZURE_59: Flex Consumption without virtual network integration (this template) reaches it over its public endpoint; access is by Entra role assignment to the app's identity only (shared keys are off)
  // checkov:skip=CKV_AZURE_206: locally redundant on purpose: the lake is a copy of Dataverse that a full resync rebuilds, and models are retrained from it
  // checkov:skip=CKV_AZURE_43: the name is 'st' + uniqueString(): 15 lowercase letters and digits, which checkov cannot evaluate
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: { publicAccess: 'None' }
}

resource lakeContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'lake'
  properties: { publicAccess: 'None' }
}

resource modelContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'models'
  properties: { publicAccess: 'None' }
}

resource storageDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Flex Consumption without virtual network integration (this template) reaches it over its public endpoint; access is by Entra role assignment to the app's identity only (Azure RBAC: Key Vault Secrets User)
  // checkov:skip=CKV_AZURE_189: Flex Consumption without virtual network integration (this template) reaches it over its public endpoint; access is by Entra role assignment to the app's identity only (Azure RBAC: Key Vault Secrets User)
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource dataverseSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: the secret's expiry is set on the app registration in Entra ID, where it is created and rotated (README 'Deploying to Azure'); a vault expiry could only repeat it at a date the template cannot know
  parent: keyVault
  name: 'dataverse-client-secret'
  properties: {
    value: dataverseClientSecret
    contentType: 'text/plain'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy of Flex Consumption depends on the region; the work is queued and retried (a lost instance's job is taken over), so an outage delays scoring rather than losing it
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

// Every app setting of local.settings.example.json, with its safe default (tests/unit/test_infra.py checks the
// list). Not here: FUNCTIONS_WORKER_RUNTIME (Flex Consumption takes the runtime from functionAppConfig and refuses
// the setting) and AzureWebJobsStorage (the identity-based AzureWebJobsStorage__* settings replace the connection
// string, so no key is stored).
var appSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsFeatureFlags: 'EnableWorkerIndexing'
  AZURE_CLIENT_ID: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false'
  TELEMETRY_SAMPLING_RATIO: '1.0'
  LAKE_CONTAINER: lakeContainer.name
  MODEL_CONTAINER: modelContainer.name
  DATAVERSE_URL: dataverseUrl
  DATAVERSE_TENANT_ID: dataverseTenantId
  DATAVERSE_CLIENT_ID: dataverseClientId
  DATAVERSE_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${dataverseSecret.properties.secretUri})'
  DATAVERSE_CLIENT_CERT_PATH: ''
  DATAVERSE_CLIENT_CERT_THUMBPRINT: ''
  DATAVERSE_USE_MANAGED_IDENTITY: 'false'
  DATAVERSE_AUTHORITY_HOST: environment().authentication.loginEndpoint
  DATAVERSE_SCOPE: ''
  DATAVERSE_CA_BUNDLE: ''
  SYNC_SCHEDULE: '0 0 */4 * * *'
  SCORING_SCHEDULE: '0 30 5 * * *'
  RETRAIN_SCHEDULE: '0 0 3 * * *'
  LICENSE_TIER: licenseTier
  MONTHLY_SCORING_QUOTA: ''
  ORG_STATUS: 'active'
  ORG_STATUS_SINCE: ''
  TRAINING_QUEUE: 'training-jobs'
  SCORING_QUEUE: 'scoring-batches'
  SYNC_QUEUE: 'sync-jobs'
  READINESS_AUC_READY: '0.75'
  READINESS_AUC_OK: '0.65'
  TRAINING_THREADS: '1'
  BACKTEST_DELIVERY_SECONDS: '420'
  SCORING_BATCH_SIZE: '5000'
  JOB_STALE_SECONDS: '20'
  DATAVERSE_WRITE_PARALLELISM: '8'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the HTTP API is called by admins' tools and Dataverse over HTTPS only (httpsOnly, TLS 1.2) with function or admin keys, or Entra ID (enableEntraAuth)
  // checkov:skip=CKV_AZURE_17: callers authenticate with function keys or Entra ID; Dataverse webhooks cannot present client certificates
  // checkov:skip=CKV_AZURE_212: scale to zero on purpose: timers and queues wake the app, and a cold start costs about 1.5 s (BENCHMARKS.md)
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      healthCheckPath: '/api/health'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
  dependsOn: [packageContainer]
}

resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_63: App Service HTTP logs do not exist on Flex Consumption; requests are traced to Application Insights (OpenTelemetry)
  // checkov:skip=CKV_AZURE_65: detailed error pages are an App Service (IIS) feature, absent on Flex Consumption; errors are JSON and traced to Application Insights
  // checkov:skip=CKV_AZURE_66: failed request tracing is an App Service (IIS) feature, absent on Flex Consumption; failures are traced to Application Insights
  // checkov:skip=CKV_AZURE_80: a Python app: no .NET Framework
  // checkov:skip=CKV_AZURE_88: Flex Consumption has no Azure Files content share: the package is deployed from a blob container by the app's identity
  // checkov:skip=CKV_AZURE_222: see the function app: public HTTPS API
  // checkov:skip=CKV_AZURE_13: App Service authentication is the authsettingsV2 resource below (enableEntraAuth); function and admin keys guard the routes either way
  parent: functionApp
  name: 'appsettings'
  properties: appSettings
  dependsOn: [storageBlobRole, storageQueueRole, storageTableRole, secretsRole, metricsRole]
}

// Entra ID in front of the app (optional): every caller signs in, except for health and the description; the
// platform passes the caller's principal as X-MS-CLIENT-PRINCIPAL, which the audit log records.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (enableEntraAuth) {
  // checkov:skip=CKV_AZURE_63: App Service HTTP logs do not exist on Flex Consumption; requests are traced to Application Insights (OpenTelemetry)
  // checkov:skip=CKV_AZURE_65: detailed error pages are an App Service (IIS) feature, absent on Flex Consumption; errors are JSON and traced to Application Insights
  // checkov:skip=CKV_AZURE_66: failed request tracing is an App Service (IIS) feature, absent on Flex Consumption; failures are traced to Application Insights
  // checkov:skip=CKV_AZURE_80: a Python app: no .NET Framework
  // checkov:skip=CKV_AZURE_88: Flex Consumption has no Azure Files content share: the package is deployed from a blob container by the app's identity
  // checkov:skip=CKV_AZURE_222: see the function app: public HTTPS API
  // checkov:skip=CKV_AZURE_13: this resource is the App Service authentication; checkov reads it as an app's config
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: ['/api/health', '/api/openapi.json']
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraAuthClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: { allowedAudiences: ['api://${entraAuthClientId}', entraAuthClientId] }
      }
    }
  }
}

resource storageBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource storageQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource storageTableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

resource secretsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, identity.id, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource readerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(appInsights.id, principalId, roles.monitoringReader)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'User'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output keyVaultName string = keyVault.name
output storageAccountName string = storage.name
output appInsightsName string = appInsights.name
