/*-------------------------------------------------------------------------
 * Peers.cs
 *   The report's peers outside .NET: the C limits tool and PostgreSQL's own
 *   shm_mq (the pg-shm-mq tool), both from ../shared/tools next to the
 *   repository (or --tools DIR, or $PGIPC_PERF_TOOLS).
 *
 * NOTES
 *   Each tool is copied into a temporary directory and built there (make /
 *   gcc; PGXS for PostgreSQL), so the tools folder may be read-only. A peer
 *   that cannot run (no tools folder, no gcc, not Linux, PostgreSQL 15 not
 *   installed, not root: run.sh starts its throw-away cluster as the
 *   postgres user) yields a reason; the report keeps its rows as skipped.
 *   pg-shm-mq's run.sh prints "pipelined N B msg/s: median [min..max]" and
 *   "round trip N B us: ..." lines; it runs fixed message counts (1,000,000
 *   at 64 B and 1 KiB, 200,000 at 8 KiB, 20,000 round trips).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace PgIpc.Perf.Report;

internal static partial class Peers
{
    /// <summary>Runs <paramref name="file"/> with <paramref name="args"/>; returns (exit code, stdout + stderr). Kills it after <paramref name="timeout"/>.</summary>
    public static (int Code, string Output) Run(string file, IEnumerable<string> args, TimeSpan timeout, string? cwd = null)
    {
        var psi = new ProcessStartInfo { FileName = file, UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        if (cwd is not null)
            psi.WorkingDirectory = cwd;
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        Task<string> err = p.StandardError.ReadToEndAsync();
        Task<string> output = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return (-1, output.Result + err.Result + $"\n(killed after {timeout.TotalSeconds:F0} s)");
        }
        p.WaitForExit();
        return (p.ExitCode, output.Result + err.Result);
    }

    /// <summary>The shared tools folder, or null with the places looked at.</summary>
    public static string? FindTools(string? given, out string looked)
    {
        var candidates = new List<string>();
        if (given is not null)
        {
            // Given explicitly: that folder or none (so --tools /nonexistent runs without the peers).
            looked = given;
            return Directory.Exists(given) ? given : null;
        }
        if (Environment.GetEnvironmentVariable("PGIPC_PERF_TOOLS") is { Length: > 0 } env)
            candidates.Add(env);
        if (ReportCommand.ProjectDirectory() is { } proj)
            candidates.Add(Path.GetFullPath(Path.Combine(proj, "..", "..", "shared", "tools")));
        candidates.Add(Path.GetFullPath(Path.Combine(Directory.GetCurrentDirectory(), "..", "shared", "tools")));
        looked = string.Join(", ", candidates);
        return candidates.FirstOrDefault(c => Directory.Exists(Path.Combine(c, "limits")) || Directory.Exists(Path.Combine(c, "pg-shm-mq")));
    }

    /// <summary>Copies <paramref name="toolDir"/> into a fresh temporary directory; returns it.</summary>
    public static string CopyToTemp(string toolDir, string tag)
    {
        string dest = Path.Combine(Path.GetTempPath(), $"pgipc-perf-{tag}-{Environment.ProcessId}");
        if (Directory.Exists(dest))
            Directory.Delete(dest, recursive: true);
        Directory.CreateDirectory(dest);
        foreach (string f in Directory.GetFiles(toolDir))
        {
            string name = Path.GetFileName(f);
            if (name is "limits" || name.EndsWith(".o", StringComparison.Ordinal) || name.EndsWith(".so", StringComparison.Ordinal))
                continue; // build products of someone else's build
            File.Copy(f, Path.Combine(dest, name));
        }
        return dest;
    }

    // ------------------------------------------------------------------
    // limits
    // ------------------------------------------------------------------

    /// <summary>Builds the limits tool in a temporary copy; returns the binary, or null and the reason.</summary>
    public static string? BuildLimits(string? toolsDir, out string reason, List<string> cleanup)
    {
        reason = "";
        if (!OperatingSystem.IsLinux())
        {
            reason = "the limits tool is Linux-only C (gcc, futex, eventfd)";
            return null;
        }
        if (toolsDir is null || !Directory.Exists(Path.Combine(toolsDir, "limits")))
        {
            reason = "the limits tool's sources (../shared/tools/limits) are not on this machine";
            return null;
        }
        string dir = CopyToTemp(Path.Combine(toolsDir, "limits"), "limits");
        cleanup.Add(dir);
        try
        {
            (int code, string output) = Run("make", ["-s"], TimeSpan.FromSeconds(120), dir);
            if (code != 0 || !File.Exists(Path.Combine(dir, "limits")))
            {
                reason = $"could not build the limits tool (make exited {code}: {output.Trim().Split('\n').LastOrDefault()})";
                return null;
            }
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            reason = $"could not build the limits tool: make is not installed ({e.Message})";
            return null;
        }
        return Path.Combine(dir, "limits");
    }

    /// <summary>Runs the limits tool on the benchmarks named by <paramref name="names"/>; records each line's median as limits.&lt;name&gt;.</summary>
    public static string RunLimits(string binary, ReportData data, int round, string[] names)
    {
        (int code, string output) = Run(binary, names, TimeSpan.FromSeconds(120));
        foreach (string line in output.Split('\n'))
        {
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // name iters median unit min max
            if (f.Length >= 6 && !line.StartsWith('#') && double.TryParse(f[2], CultureInfo.InvariantCulture, out double median))
                data.Add($"limits.{f[0]}", round, median, f[3], higherIsBetter: f[3].EndsWith("/s", StringComparison.Ordinal));
        }
        return code == 0 ? "" : $"limits exited {code}";
    }

    // ------------------------------------------------------------------
    // PostgreSQL's shm_mq (pg-shm-mq/run.sh)
    // ------------------------------------------------------------------

    [GeneratedRegex(@"^pipelined (\d+) B msg/s: ([0-9.e+-]+)")]
    private static partial Regex PgPipelined();

    [GeneratedRegex(@"^round trip (\d+) B us: ([0-9.e+-]+)")]
    private static partial Regex PgRoundTrip();

    /// <summary>Prepares the PostgreSQL peer (a temporary copy of pg-shm-mq); returns its run.sh, or null and the reason.</summary>
    public static string? PreparePostgres(string? toolsDir, out string reason, List<string> cleanup)
    {
        reason = "";
        if (!OperatingSystem.IsLinux())
        {
            reason = "pg-shm-mq runs Debian's PostgreSQL 15 on Linux";
            return null;
        }
        if (toolsDir is null || !Directory.Exists(Path.Combine(toolsDir, "pg-shm-mq")))
        {
            reason = "the pg-shm-mq tool (../shared/tools/pg-shm-mq) is not on this machine";
            return null;
        }
        if (!File.Exists("/usr/lib/postgresql/15/bin/postgres") || !File.Exists("/usr/lib/postgresql/15/bin/pg_config"))
        {
            reason = "PostgreSQL 15 is not installed (Debian: apt-get install -y postgresql-15 postgresql-server-dev-15)";
            return null;
        }
        if (Environment.UserName != "root")
        {
            reason = "pg-shm-mq's run.sh must run as root (it starts a throw-away cluster as the postgres user)";
            return null;
        }
        string dir = CopyToTemp(Path.Combine(toolsDir, "pg-shm-mq"), "pgmq");
        cleanup.Add(dir);
        return Path.Combine(dir, "run.sh");
    }

    /// <summary>One sample of every PostgreSQL figure with <paramref name="workers"/> workers, recorded as pg.w&lt;W&gt;.*; returns an error or "".</summary>
    public static string RunPostgres(string runSh, int workers, ReportData data, int round)
    {
        (int code, string output) = Run("bash", [runSh, "1", workers.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(300));
        if (code != 0)
            return $"run.sh exited {code}: {output.Trim().Split('\n').LastOrDefault()}";
        foreach (string line in output.Split('\n'))
        {
            Match m = PgPipelined().Match(line);
            if (m.Success)
                data.Add($"pg.w{workers}.pipelined.{m.Groups[1].Value}", round, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), "msg/s", true);
            m = PgRoundTrip().Match(line);
            if (m.Success)
                data.Add($"pg.w{workers}.rt.{m.Groups[1].Value}", round, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), "us", false);
            if (line.StartsWith("postgres ", StringComparison.Ordinal))
                PostgresVersion = line.Trim();
        }
        return "";
    }

    /// <summary>run.sh's first line ("postgres 15.x, queue 65536, W=1, 1 samples") of the last run.</summary>
    public static string? PostgresVersion { get; private set; }
}
