#!/usr/bin/env bash
# The API reference (README: API reference): docfx 2.81.0, a dotnet tool, installed into artifacts/tools/docfx on
# first use, reads the built assemblies of PgIpc.Core and the three backends with their XML documentation
# (docs/docfx.json) and writes a static site to artifacts/docs (open artifacts/docs/index.html).
#   bash eng/docs.sh            builds the libraries (Debug) first, then the reference
#   bash eng/docs.sh --no-build uses the assemblies already built (CI: after its build step)
set -euo pipefail
cd "$(dirname "$0")/.."
tool=artifacts/tools/docfx
if [ ! -x "$tool/docfx" ]; then
  dotnet tool install docfx --version 2.81.0 --tool-path "$tool" > /dev/null
fi
if [ "${1:-}" != "--no-build" ]; then
  for p in Core Platform.Linux Platform.Posix Platform.Windows; do
    dotnet build "src/$p" -c Debug -warnaserror --nologo -v quiet > /dev/null
  done
fi
rm -rf docs/api artifacts/docs
"$tool/docfx" metadata docs/docfx.json
"$tool/docfx" build docs/docfx.json
echo "docs: artifacts/docs/index.html ($(find docs/api -name '*.yml' | wc -l) API pages)"
