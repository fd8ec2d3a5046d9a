#!/usr/bin/env bash
# azd postprovision hook (azure.yaml): copy the tool images ACR runs pull into the registry, so
# that no run pulls them anonymously from Docker Hub, whose pull limits count per IP address and
# ACR agents share theirs (docs.docker.com/docker-hub/usage/pulls/).
#
# The list comes from Slipway itself (`slipway tools list --import-plan`, read from slipway.yaml:
# `tools:` and `scanner.image`, with `tools.mirror` at its default {registry}/slipway-tools), so
# what is imported is what the runs pull. azd runs the hook with its environment, main.bicep's
# outputs included (Azure/azure-dev cli/azd/pkg/ext/hooks_runner.go passes h.env.Environ()):
# SLIPWAY_REGISTRY (the registry's name) and SLIPWAY_REGISTRY_RESOURCE_GROUP.
#
# An image pinned by digest is imported by that digest (az acr import --source <repo>@sha256:...,
# the form the command takes) and tagged with its version; --force lets every `azd provision`
# run this again. The operator needs the Azure CLI, signed in with the right to import into the
# registry (Contributor, or a role with the importImage action).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

fail() { printf 'import-tools: %s\n' "$1" >&2; exit 1; }

registry=${SLIPWAY_REGISTRY:-}
[ -n "$registry" ] || fail "SLIPWAY_REGISTRY is not set: run this as the azd hook (azd provision), or export it"
group=()  # expanded as ${group[@]+...}: bash 3.2 (macOS) calls an empty array unbound under set -u
[ -z "${SLIPWAY_REGISTRY_RESOURCE_GROUP:-}" ] || group=(--resource-group "$SLIPWAY_REGISTRY_RESOURCE_GROUP")

if [ -n "${SLIPWAY_CLI:-}" ]; then
  read -r -a slipway <<<"$SLIPWAY_CLI"
elif [ -x .venv/bin/slipway ]; then
  slipway=(.venv/bin/slipway)
elif [ -x .venv/Scripts/slipway.exe ]; then
  slipway=(.venv/Scripts/slipway.exe)
elif command -v slipway >/dev/null 2>&1; then
  slipway=(slipway)
else
  fail "the slipway CLI lists the images to import: create .venv (./dev test, or python3 -m venv .venv && .venv/bin/pip install -e .) or set SLIPWAY_CLI"
fi
command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) imports the images: install it and run az login"

# A failing plan (bad slipway.yaml, another registry) stops the hook before anything is imported.
plan=$("${slipway[@]}" tools list --import-plan --acr "$registry")
count=0
while IFS=$'\t' read -r source target; do
  [ -n "$source" ] || continue
  case $target in
    *:*) destination=(--image "$target") ;;
    *) destination=(--repository "$target") ;;  # pinned by digest alone: no tag to give it
  esac
  printf 'import-tools: %s -> %s/%s\n' "$source" "$registry" "$target"
  az acr import --name "$registry" ${group[@]+"${group[@]}"} --source "$source" "${destination[@]}" --force --output none
  count=$((count + 1))
done <<<"$plan"
printf 'import-tools: %d tool image(s) in %s\n' "$count" "$registry"
