#!/usr/bin/env bash
# The package as a user gets it (issue 16 items 1, 2, 7, 9). Called by .ci/run; runs alone too:
#   bash .ci/consumer.sh [path-to-wine64]
#   1. the GitHub Actions workflow is valid (action-validator from npm, against GitHub's schema);
#   2. `dotnet pack` into a local folder feed (artifacts/feed): the PgIpc package (+ .snupkg), PgIpc.Hosting and the PgIpc.Cli tool;
#   3. a fresh console project in a temporary directory restores PgIpc from that feed only (package source
#      mapping: PgIpc* from the feed, anything else from the machine's configured source), builds the README's
#      quick start (samples/QuickStart/Program.cs, checked identical to the README's copy) and runs it: two
#      processes sharing a segment, a named LWLock tranche and a shm_mq;
#   4. the tool installed from the feed runs `pgipc backends` and `pgipc demo`;
#   5. the CLI published with NativeAOT runs `pgipc demo`;
#   6. with a wine64 path: the consumer published for win-x64 (self-contained) runs under Wine.
# Prints "consumer: ..." lines and the seconds each step took; exits non-zero on the first failed step's report.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
art="$root/artifacts/ci/consumer"
feed="$root/artifacts/feed"
wine=${1:-}
rm -rf "$art" "$feed"
mkdir -p "$art" "$feed"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
status=0
fail() { echo "consumer: FAIL: $*" >&2; status=1; }
step_start=$SECONDS
step() { echo "consumer: $1 ($((SECONDS - step_start)) s)"; step_start=$SECONDS; }
version=$(sed -nE 's:.*<Version>([^<]+)</Version>.*:\1:p' src/Directory.Build.props | head -1)

# --- 1. the workflow file ---------------------------------------------------------
validator="$root/artifacts/tools/node_modules/.bin/action-validator"
if [ ! -x "$validator" ]; then
  (mkdir -p "$root/artifacts/tools" && cd "$root/artifacts/tools" \
    && timeout 300 npm install --no-audit --no-fund --no-save @action-validator/cli@0.6.0 @action-validator/core@0.6.0) > "$art/npm.log" 2>&1 \
    || fail "could not install @action-validator/cli from npm (see $art/npm.log)"
fi
if [ -x "$validator" ]; then
  "$validator" .github/workflows/ci.yml > "$art/workflow.log" 2>&1 || { cat "$art/workflow.log"; fail ".github/workflows/ci.yml is not a valid workflow"; }
fi
step "workflow validated"

# --- 2. pack -----------------------------------------------------------------------
if ! dotnet pack PgIpc.sln -c Release -o "$feed" > "$art/pack.log" 2>&1; then
  grep -E 'error' "$art/pack.log" | sort -u | tail -20
  fail "dotnet pack failed (see $art/pack.log)"
fi
for f in "PgIpc.$version.nupkg" "PgIpc.$version.snupkg" "PgIpc.Hosting.$version.nupkg" "PgIpc.Cli.$version.nupkg"; do
  [ -f "$feed/$f" ] || fail "dotnet pack made no $f"
done
contents=$(unzip -Z1 "$feed/PgIpc.$version.nupkg" 2>/dev/null)
for f in lib/net10.0/PgIpc.Core.dll lib/net10.0/PgIpc.Core.xml lib/net10.0/PgIpc.Platform.Linux.dll \
         lib/net10.0/PgIpc.Platform.Posix.dll lib/net10.0/PgIpc.Platform.Windows.dll README.md LICENSE; do
  grep -qx "$f" <<<"$contents" || fail "PgIpc.$version.nupkg lacks $f"
done
# Listed into a variable first: under pipefail, `unzip | grep -q` fails when grep exits before unzip has written all.
symbols=$(unzip -Z1 "$feed/PgIpc.$version.snupkg" 2>/dev/null)
grep -qx lib/net10.0/PgIpc.Core.pdb <<<"$symbols" || fail "PgIpc.$version.snupkg lacks PgIpc.Core.pdb"
# PgIpc.Hosting: its own assembly and docs, and a dependency on the PgIpc package (not on a PgIpc.Core that does not exist).
hosting=$(unzip -Z1 "$feed/PgIpc.Hosting.$version.nupkg" 2>/dev/null)
for f in lib/net10.0/PgIpc.Hosting.dll lib/net10.0/PgIpc.Hosting.xml README.md LICENSE; do
  grep -qx "$f" <<<"$hosting" || fail "PgIpc.Hosting.$version.nupkg lacks $f"
done
nuspec=$(unzip -p "$feed/PgIpc.Hosting.$version.nupkg" PgIpc.Hosting.nuspec 2>/dev/null)
grep -q "<dependency id=\"PgIpc\" version=\"$version\"" <<<"$nuspec" || fail "PgIpc.Hosting's nuspec does not depend on PgIpc $version"
grep -q 'id="PgIpc.Core"' <<<"$nuspec" && fail "PgIpc.Hosting's nuspec depends on PgIpc.Core, which is not a package"
grep -q 'id="Microsoft.Extensions.Logging.Abstractions"' <<<"$(unzip -p "$feed/PgIpc.$version.nupkg" PgIpc.nuspec 2>/dev/null)" \
  || fail "the PgIpc package does not declare Core's dependency Microsoft.Extensions.Logging.Abstractions"
step "packed $(ls "$feed" | tr '\n' ' ')"

# --- 3. the consumer ---------------------------------------------------------------
# The README shows the quick start between these markers; it must be the file CI builds.
sed -n '/<!-- quickstart:begin -->/,/<!-- quickstart:end -->/p' README.md | sed '1,2d;$d' | sed '$d' > "$art/readme-quickstart.cs"
if ! diff -u samples/QuickStart/Program.cs "$art/readme-quickstart.cs" > "$art/readme.diff"; then
  cat "$art/readme.diff"; fail "README's quick start differs from samples/QuickStart/Program.cs"
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgipc-consumer.XXXXXX")
# A fresh restore of this version: a copy cached by an earlier run would hide what the feed holds now.
pkgs=${NUGET_PACKAGES:-$HOME/.nuget/packages}
rm -rf "$pkgs/pgipc/$version" "$pkgs/pgipc.cli/$version"
# The feed is the only source of PgIpc*; everything else comes from the source this machine is configured with.
upstream=$(dotnet nuget list source --format short 2>/dev/null | awk '$1 ~ /^E/ {print $2; exit}')
cat > "$tmp/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$feed" />
    <add key="upstream" value="${upstream:-https://api.nuget.org/v3/index.json}" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="local"><package pattern="PgIpc" /><package pattern="PgIpc.*" /></packageSource>
    <packageSource key="upstream"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML
(
  cd "$tmp" && dotnet new console -n Consumer -o Consumer --framework net10.0 \
    && cp "$root/samples/QuickStart/Program.cs" Consumer/Program.cs \
    && dotnet add Consumer package PgIpc --version "$version"
) > "$art/new.log" 2>&1 || { tail -20 "$art/new.log"; fail "could not create the consumer project (see $art/new.log)"; }
grep -q "$feed" "$tmp/Consumer/obj/project.assets.json" 2>/dev/null || fail "the consumer did not restore PgIpc from the local feed"
if dotnet build "$tmp/Consumer" -c Release -warnaserror -o "$tmp/out" > "$art/build.log" 2>&1; then
  step "consumer project created and built"
  (cd "$tmp" && timeout 120 ./out/Consumer) > "$art/run.log" 2>&1
  rc=$?
  cat "$art/run.log" | sed 's/^/consumer:   /'
  [ "$rc" -eq 0 ] && grep -q "counter: 2000" "$art/run.log" && grep -q "received: hello from child" "$art/run.log" \
    || fail "the consumer program failed on Linux (exit $rc)"
  step "consumer ran (linux)"
else
  grep -E 'error' "$art/build.log" | sort -u | tail -20; fail "the consumer did not build (see $art/build.log)"
fi

# --- 4. the tool -------------------------------------------------------------------
# --add-source cannot be combined with source mapping (the consumer's nuget.config): the tool is installed from a
# directory of its own whose nuget.config has no source at all, so the feed added on the command line is the only
# one (the tool has no dependencies).
tooldir=$(mktemp -d "${TMPDIR:-/tmp}/pgipc-tool.XXXXXX")
printf '<?xml version="1.0" encoding="utf-8"?>\n<configuration><packageSources><clear /></packageSources></configuration>\n' > "$tooldir/nuget.config"
if (cd "$tooldir" && dotnet tool install PgIpc.Cli --version "$version" --tool-path "$tmp/tools" --add-source "$feed") > "$art/tool.log" 2>&1; then
  (cd "$tmp" && timeout 60 ./tools/pgipc backends) > "$art/tool-backends.log" 2>&1 || fail "pgipc backends (tool) failed"
  sed 's/^/consumer:   pgipc backends: /' "$art/tool-backends.log"
  grep -q "(default)" "$art/tool-backends.log" || fail "pgipc backends (tool) names no default backend"
  (cd "$tmp" && timeout 300 ./tools/pgipc demo) > "$art/tool-demo.log" 2>&1 || { tail -20 "$art/tool-demo.log"; fail "pgipc demo (tool) failed"; }
  step "tool installed from the feed; pgipc backends and pgipc demo ran"
else
  tail -20 "$art/tool.log"; fail "dotnet tool install PgIpc.Cli failed (see $art/tool.log)"
fi

# --- 5. NativeAOT --------------------------------------------------------------------
# The AOT compiler links with clang and zlib.
if ! command -v clang > /dev/null || [ ! -f /usr/include/zlib.h ]; then
  echo "consumer: installing clang and zlib1g-dev (NativeAOT's linker and zlib)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang zlib1g-dev) > "$art/apt.log" 2>&1 \
    || fail "could not install clang / zlib1g-dev (see $art/apt.log)"
fi
if dotnet publish src/Cli -c Release -r linux-x64 -p:PublishAot=true -o "$art/aot" > "$art/aot-publish.log" 2>&1; then
  (cd "$tmp" && timeout 300 "$art/aot/pgipc" demo) > "$art/aot-demo.log" 2>&1 || { tail -20 "$art/aot-demo.log"; fail "pgipc demo (NativeAOT) failed"; }
  grep -q "found on disk after a cold read with checksums: OK" "$art/aot-demo.log" || fail "pgipc demo (NativeAOT) did not check its data"
  step "NativeAOT pgipc ($(du -k "$art/aot/pgipc" | cut -f1) KiB) ran pgipc demo"
else
  grep -E 'error' "$art/aot-publish.log" | sort -u | tail -20; fail "NativeAOT publish failed (see $art/aot-publish.log)"
fi

# --- 6. the consumer under Wine ----------------------------------------------------
if [ -n "$wine" ] && [ -x "$wine" ]; then
  if dotnet publish "$tmp/Consumer" -c Release -r win-x64 --self-contained -o "$tmp/win" > "$art/win-publish.log" 2>&1; then
    export WINEDEBUG=-all WINEPREFIX="${TMPDIR:-/tmp}/pgipc-ci-wineprefix"
    (cd "$tmp/win" && timeout 300 "$wine" Consumer.exe) > "$art/win-run.log" 2>&1
    rc=$?
    tr -d '\r' < "$art/win-run.log" | sed 's/^/consumer:   (wine) /'
    [ "$rc" -eq 0 ] && grep -q "counter: 2000" "$art/win-run.log" || fail "the consumer program failed under Wine (exit $rc)"
    "$(dirname "$wine")/wineserver" -k 2>/dev/null || true
    step "consumer ran (win-x64 under Wine)"
  else
    grep -E 'error' "$art/win-publish.log" | sort -u | tail -20; fail "win-x64 publish of the consumer failed"
  fi
fi

rm -rf "$tmp" "$tooldir"
exit $status
