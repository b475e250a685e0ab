// Deployment of the predictive opportunity scoring function app (`azd up`; README "Deploying to Azure").
// Subscription scope: one resource group holding everything, named after the azd environment.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the azd environment: names the resource group and the resources.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (one that offers Flex Consumption).')
param location string

@description('The Dataverse org URL, e.g. https://contoso.crm.dynamics.com')
param dataverseUrl string

@description('Entra tenant id of the app registration that is the Dataverse application user.')
param dataverseTenantId string

@description('Application (client) id of that app registration.')
param dataverseClientId string

@secure()
@description('A client secret of that app registration; stored in Key Vault, referenced from the app settings.')
param dataverseClientSecret string

@allowed(['premium', 'enterprise'])
@description('premium: no scoring quota; enterprise: 1,500 scored records a month, as Dynamics.')
param licenseTier string = 'premium'

@description('Require Entra ID sign-in (App Service authentication) in front of every route but health and the description.')
param enableEntraAuth bool = false

@description('Client id of the app registration that signs callers in when enableEntraAuth is true.')
param entraAuthClientId string = ''

@description('Object id of the deploying user, given read access to the telemetry; empty for none.')
param principalId string = ''

var tags = { 'azd-env-name': environmentName }
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'resources'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    dataverseUrl: dataverseUrl
    dataverseTenantId: dataverseTenantId
    dataverseClientId: dataverseClientId
    dataverseClientSecret: dataverseClientSecret
    licenseTier: licenseTier
    enableEntraAuth: enableEntraAuth
    entraAuthClientId: entraAuthClientId
    principalId: principalId
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_URL string = resources.outputs.functionAppUrl
output AZURE_KEY_VAULT_NAME string = resources.outputs.keyVaultName
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName
output APPLICATIONINSIGHTS_NAME string = resources.outputs.appInsightsName
