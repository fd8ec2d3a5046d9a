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
- POST /api/ops/replay          ops.ops_replay                 master key: dead letters -> queue (new ids)
                                (never under admin/ or runtime/: the host reserves those routes)
- queue %BUILD_QUEUE%           dispatch.dispatch              build request -> one ACR run
- timer %SLIPWAY_RECONCILE_SCHEDULE%       runs.reconcile_runs           run status -> ledger, commit status
- timer %SLIPWAY_SCHEDULE_TIMER%           schedules.scheduled_rebuilds  target schedules -> rebuilds
- timer %SLIPWAY_BASE_IMAGE_POLL_SCHEDULE% schedules.base_image_poll     moved base-image tags -> rebuilds
- timer %SLIPWAY_CACHE_PRUNE_SCHEDULE%     prune_cache.prune_cache       unreferenced cache blobs -> deleted
- timer %SLIPWAY_IMAGE_PRUNE_SCHEDULE%     prune_images.prune_images     images: rules -> manifests deleted
"""

import azure.functions as func

from handlers import dispatch, ops, prune_cache, prune_images, runs, schedules, webhooks

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(webhooks.bp)
app.register_functions(dispatch.bp)
app.register_functions(ops.bp)
app.register_functions(runs.bp)
app.register_functions(schedules.bp)
app.register_functions(prune_cache.bp)
app.register_functions(prune_images.bp)
