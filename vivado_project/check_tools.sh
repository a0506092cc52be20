#!/bin/sh
# check_tools.sh: `make check` — are Vitis (v++, vivado), XRT (xbutil) and the U280 platform installed, in the expected versions?
#
# Expects FLIGHTLLM_PLATFORM, FLIGHTLLM_VITIS_VERSION, FLIGHTLLM_XRT_VERSION (the Makefile passes
# them from kernels.mk).  Looks for the platform in $PLATFORM_REPO_PATHS (colon-separated), then
# /opt/xilinx/platforms, then asks `platforminfo`.  Prints one line per prerequisite and, for each
# missing one, what to install; exits 1 if anything is missing.
set -u
platform=${FLIGHTLLM_PLATFORM:?set FLIGHTLLM_PLATFORM (run through make check)}
vitis=${FLIGHTLLM_VITIS_VERSION:?set FLIGHTLLM_VITIS_VERSION (run through make check)}
xrt=${FLIGHTLLM_XRT_VERSION:?set FLIGHTLLM_XRT_VERSION (run through make check)}
missing=0

ok() { printf 'check: ok       %s\n' "$1"; }
fail() {
    printf 'check: MISSING  %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '                %s\n' "$line" >&2; done
    missing=$((missing + 1))
}
# first "vYYYY.N" / "YYYY.N" in a tool's version banner
vitis_release() { grep -o 'v\{0,1\}20[0-9][0-9]\.[0-9]' | head -n 1 | tr -d v; }

install_vitis="install Vitis $vitis (AMD Unified Installer, 'Vitis' product; it includes Vivado), then: source <install dir>/Vitis/$vitis/settings64.sh"

# --- Vitis: v++ and vivado ---------------------------------------------------------------------
for tool in v++ vivado; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        fail "$tool (Vitis $vitis): not found on PATH" "$install_vitis"
        continue
    fi
    if [ "$tool" = v++ ]; then found=$(v++ --version 2>&1 | vitis_release)
    else found=$(vivado -version 2>&1 | vitis_release); fi
    if [ "$found" = "$vitis" ]; then
        ok "$tool $found ($(command -v "$tool"))"
    else
        fail "$tool $vitis: found version '${found:-unknown}' at $(command -v "$tool")" \
             "the scripts are written for $vitis; $install_vitis"
    fi
done

# --- XRT: xbutil ---------------------------------------------------------------------------------
install_xrt="install XRT $xrt (the XRT package of release $vitis for your OS, from the Alveo U280 downloads page), then: source /opt/xilinx/xrt/setup.sh"
if ! command -v xbutil >/dev/null 2>&1; then
    if [ -n "${XILINX_XRT:-}" ] && [ -x "$XILINX_XRT/bin/xbutil" ]; then
        fail "xbutil (XRT $xrt): XILINX_XRT=$XILINX_XRT is set but its bin/ is not on PATH" \
             "run: source $XILINX_XRT/setup.sh"
    else
        fail "xbutil (XRT $xrt): not found on PATH" "$install_xrt"
    fi
else
    found=$(xbutil --version 2>&1 | grep -i 'version' | grep -o '[0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*' | head -n 1)
    case "$found" in
        "$xrt"|"$xrt".*) ok "xbutil, XRT $found ($(command -v xbutil))" ;;
        *) fail "XRT $xrt: xbutil reports version '${found:-unknown}'" "$install_xrt" ;;
    esac
fi

# --- the U280 platform ---------------------------------------------------------------------------
found=""
old_ifs=$IFS
IFS=:
for dir in ${PLATFORM_REPO_PATHS:-} /opt/xilinx/platforms; do
    [ -n "$dir" ] || continue
    if [ -f "$dir/$platform/$platform.xpfm" ]; then found="$dir/$platform/$platform.xpfm"; break; fi
done
IFS=$old_ifs
if [ -z "$found" ] && command -v platforminfo >/dev/null 2>&1 \
        && platforminfo -p "$platform" >/dev/null 2>&1; then
    found="(platforminfo -p $platform)"
fi
if [ -n "$found" ]; then
    ok "platform $platform: $found"
else
    fail "platform $platform: not in PLATFORM_REPO_PATHS='${PLATFORM_REPO_PATHS:-}' nor /opt/xilinx/platforms" \
         "download the U280 'Development Target Platform' package for $platform (deb/rpm) from" \
         "the Alveo U280 downloads page (Vitis design flow), install it (it goes to /opt/xilinx/platforms)," \
         "and: export PLATFORM_REPO_PATHS=/opt/xilinx/platforms"
fi

if [ "$missing" -gt 0 ]; then
    printf 'check: %d prerequisite(s) missing: the build cannot start (see above)\n' "$missing" >&2
    exit 1
fi
printf 'check: all prerequisites present\n'
