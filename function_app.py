"""Slipway's composition root: the FunctionApp and every entry point, nothing else.

Entry points (see handlers/):
- POST /api/hooks/github        webhooks.github_webhook        X-Hub-Signature-256 (HMAC)
- POST /api/hooks/gitlab        webhooks.gitlab_webhook        X-Gitlab-Token
- POST /api/hooks/azure-devops  webhooks.azure_devops_webhook  Basic auth
- POST /api/hooks/bitbucket     webhooks.bitbucket_webhook     X-Hub-Signature (sha256 HMAC)
- POST /api/hooks/gitea         webhooks.gitea_webhook         X-Gitea-/X-Forgejo-Signature (HMAC)
                                each: pushes -> build requests on the queue
- POST /api/hooks/acr           webhooks.acr_webhook           Authorization: Bearer <token>
- POST /api/hooks/eventgrid     webhooks.eventgrid_webhook     ?token= (+ validation handshakes)
- POST /api/hooks/dockerhub     webhooks.dockerhub_webhook     ?token= (an unsigned hint)
                                each: base-image updates -> rebuilds of dependent targets
- queue %BUILD_QUEUE%           dispatch.dispatch              build request -> one ACR run
"""

import azure.functions as func

from handlers import dispatch, webhooks

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(webhooks.bp)
app.register_functions(dispatch.bp)
