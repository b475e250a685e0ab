"""Triggers (thin: parse the input, call one service function, shape the output), the one settings
reader (`settings`), the typed composition root (`app_context`) and the error-to-status table (`http`).
`function_app.py` registers each concern's Blueprint explicitly."""
