#!/bin/sh
# Regenerates PublicAPI.Unshipped.txt of PgIpc.Core, the three platform projects and PgIpc.Hosting from the
# PublicApiAnalyzers' RS0016 diagnostics ("Symbol '...' is not part of the declared public API"),
# whose text is the file's line format. Run from anywhere after a change to the public surface;
# review the diff. PublicAPI.Shipped.txt stays "#nullable enable" until a release is cut.
set -eu
cd "$(dirname "$0")/.."
projects="src/Core/PgIpc.Core.csproj src/Platform.Posix/PgIpc.Platform.Posix.csproj src/Platform.Linux/PgIpc.Platform.Linux.csproj src/Platform.Windows/PgIpc.Platform.Windows.csproj src/Hosting/PgIpc.Hosting.csproj"
for p in $projects; do printf '#nullable enable\n' > "$(dirname "$p")/PublicAPI.Unshipped.txt"; done
log=$(mktemp)
# --no-incremental: an up-to-date project would not report its warnings again.
dotnet build PgIpc.sln -c Debug --no-incremental '-p:WarningsNotAsErrors=RS0016%3BRS0017' > "$log" 2>&1 || true
for p in $projects; do
  out="$(dirname "$p")/PublicAPI.Unshipped.txt"
  { printf '#nullable enable\n'
    grep "warning RS0016" "$log" | grep -F "[$PWD/$p]" \
      | sed -E "s/.*Symbol '(.*)' is not part of the declared public API.*/\1/" | LC_ALL=C sort -u
  } > "$out"
  echo "$out: $(($(wc -l < "$out") - 1)) symbols"
done
rm -f "$log"
