"""The Azure Functions app: builds the FunctionApp and registers one Blueprint per concern. Nothing else."""

import azure.functions as func

from functions import blueprints

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for bp in blueprints():
    app.register_functions(bp)
