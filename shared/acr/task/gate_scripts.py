"""The step scripts of the gates: the platform check, the scan and its gate, and the release tags.

Each runs after the build pushed by digest only, reads that digest from the workspace, and prints
its verdict as a report line (``<marker> platform-check failed ...``) for reconciliation.
"""

from __future__ import annotations

from shared.acr.task.build import BuildValues
from shared.acr.task.scripts import arg, digest_functions, header, prelude, q
from shared.acr.task.spec import (
    SCAN_REPORT_ARTIFACT_TYPE,
    STEP_PLATFORM_CHECK,
    STEP_RELEASE_TAGS,
    STEP_SCAN,
    STEP_SCAN_GATE,
)
from shared.model.build_request import BuildRequest
from shared.model.supply_chain import ScanGate

# Trivy's exit code for findings at the gate's severities; any other failure is an error.
_SCAN_FINDINGS_EXIT = 3
# Prints each platform of an index as "os/arch[/variant] " (attestations show as unknown/unknown).
_INDEX_PLATFORMS_FORMAT = (
    "{{range .Manifest.Manifests}}{{with .Platform}}{{.OS}}/{{.Architecture}}"
    "{{with .Variant}}/{{.}}{{end}} {{end}}{{end}}"
)
_IMAGE_PLATFORM_FORMAT = "{{.Image.OS}}/{{.Image.Architecture}}{{with .Image.Variant}}/{{.}}{{end}}"


def _platform_patterns(platform: str) -> str:
    """``case`` patterns matching ``platform`` in the space-separated list the inspection prints."""
    patterns = [f'*" "{q(platform)}" "*']
    if platform == "linux/arm64":  # indexes may spell it with the default variant
        patterns.append('*" linux/arm64/v8 "*')
    return "|".join(patterns)


def platform_check_script(request: BuildRequest, b: BuildValues) -> str:
    ref = f'{q(b.repository)}@"$digest"'
    lines = [
        *header(STEP_PLATFORM_CHECK, request, __name__),
        *prelude(reads_secrets=False),
        *digest_functions(),
        "read_digest",
        f"kind=$(docker buildx imagetools inspect --format '{{{{.Manifest.MediaType}}}}' {ref} </dev/null) "
        "|| fail 'platform check: cannot inspect the pushed image'",
        "case $kind in",
        f"  *index*|*manifest.list*) format={q(_INDEX_PLATFORMS_FORMAT)} ;;",
        f"  *) format={q(_IMAGE_PLATFORM_FORMAT)} ;;",
        "esac",
        f'found=$(docker buildx imagetools inspect --format "$format" {ref} </dev/null) '
        "|| fail 'platform check: cannot read the platforms of the pushed image'",
        "found=\" $(printf '%s' \"$found\" | tr -s ' \\n' '  ') \"",
        "missing=",
    ]
    for platform in b.platforms:
        lines.append(
            f'case $found in {_platform_patterns(platform)}) ;; *) missing="$missing "{q(platform)} ;; esac'
        )
    lines += [
        'if [ -n "$missing" ]; then',
        f"  printf '{b.marker} platform-check failed missing%s\\n' \"$missing\"",
        '  fail "platform check: the pushed image lacks$missing (it has:$found)"',
        "fi",
        f"printf '{b.marker} platform-check passed\\n'",
    ]
    return "\n".join(lines) + "\n"


def _report_name(platform: str) -> str:
    return "scan-" + platform.replace("/", "-") + ".json"


def scan_script(request: BuildRequest, b: BuildValues, scan: ScanGate) -> str:
    """Runs in the scanner image (its registry login is the run's, from ``HOME=/acb/home``)."""
    lines = [
        *header(STEP_SCAN, request, __name__),
        *prelude(reads_secrets=False),
        *digest_functions(),
        "read_digest",
        'rm -f "$out/scan-verdict" "$out"/scan-*.json',
        "verdict=passed",
    ]
    severity = ",".join(scan.severity)
    for platform in b.platforms:
        report = _report_name(platform)
        argv = [
            "trivy", "image", "--quiet", "--no-progress", "--image-src", "remote", "--scanners", "vuln",
            "--platform", platform, "--severity", severity, "--exit-code", str(_SCAN_FINDINGS_EXIT),
            *(["--ignore-unfixed"] if scan.ignore_unfixed else []), "--format", "json",
        ]  # fmt: skip
        counts = " ".join(
            f'{name}=$(grep -o \'"Severity": *"{name}"\' "$out/{report}" | wc -l | tr -d \' \')'
            for name in scan.severity
        )
        lines += [
            "code=0",
            " ".join(q(word) for word in argv)
            + f' --output "$out/{report}" {q(b.repository)}@"$digest" </dev/null || code=$?',
            f'[ -s "$out/{report}" ] || fail {q(f"the scanner wrote no report for {platform}")}',
            "case $code in",
            f"  0) printf '{b.marker} scan %s passed\\n' {q(platform)} ;;",
            f"  {_SCAN_FINDINGS_EXIT}) verdict=failed; printf '{b.marker} scan %s failed %s\\n' "
            f'{q(platform)} "{counts}" ;;',
            f'  *) fail "the scanner could not scan {platform} (exit $code)" ;;',
            "esac",
        ]
    lines.append('printf \'%s\\n\' "$verdict" > "$out/scan-verdict"')
    return "\n".join(lines) + "\n"


def scan_gate_script(request: BuildRequest, b: BuildValues, scan: ScanGate) -> str:
    """Runs in the ORAS image: keeps the reports with the image, then enforces the verdict."""
    lines = [
        *header(STEP_SCAN_GATE, request, __name__),
        *prelude(reads_secrets=False),
        *digest_functions(),
        "read_digest",
        'cd "$out"',
    ]
    for platform in b.platforms:
        report = _report_name(platform)
        argv = [
            "oras", "attach", "--artifact-type", SCAN_REPORT_ARTIFACT_TYPE,
            "--annotation", f"dev.slipway.platform={platform}",
            "--annotation", f"dev.slipway.request={request.id}",
        ]  # fmt: skip
        lines.append(
            " ".join(q(word) for word in argv)
            + f' {q(b.repository)}@"$digest" {q(report + ":application/json")} </dev/null'
        )
    lines += [
        f"printf '{b.marker} scan-report stored %s\\n' {q(SCAN_REPORT_ARTIFACT_TYPE)}",
        'verdict=$(cat "$out/scan-verdict" 2>/dev/null) || fail "the scan step left no verdict"',
        "case $verdict in",
        f"  passed) printf '{b.marker} scan-gate passed\\n' ;;",
        f"  failed) printf '{b.marker} scan-gate failed\\n'; "
        f"fail {q('the scan gate failed: findings of ' + ', '.join(scan.severity) + ' severity')} ;;",
        '  *) fail "the scan verdict is unreadable" ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def release_tags_script(request: BuildRequest, b: BuildValues) -> str:
    lines = [
        *header(STEP_RELEASE_TAGS, request, __name__),
        *prelude(reads_secrets=False),
        *digest_functions(),
        "read_digest",
        *(arg("--tag", image) for image in b.images),
        f'docker buildx imagetools create "$@" {q(b.repository)}@"$digest" </dev/null',
        f"printf '{b.marker} tagged %s@%s\\n' {q(b.repository)} \"$digest\"",
    ]
    return "\n".join(lines) + "\n"
