"""Slipway's composition root: the FunctionApp and every entry point, nothing else.

Entry points (see handlers/):
- POST /api/hooks/github   webhooks.github_webhook   signed GitHub pushes -> build requests
- queue %BUILD_QUEUE%      dispatch.dispatch         build request -> one ACR run
"""

import azure.functions as func

from handlers import dispatch, webhooks

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(webhooks.bp)
app.register_functions(dispatch.bp)
