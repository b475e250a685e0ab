"""The Azure Functions app: builds the FunctionApp and registers one Blueprint per concern. Nothing else."""

import azure.functions as func

from functions import console, health, jobs, models, openapi, scoring, sync

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health.bp)
app.register_functions(openapi.bp)
app.register_functions(sync.bp)
app.register_functions(models.bp)
app.register_functions(scoring.bp)
app.register_functions(console.bp)
# Last: jobs holds the catch-all JSON 404, and hosts that honour registration order prefer specific routes.
app.register_functions(jobs.bp)
