/*-------------------------------------------------------------------------
 * WalDumpCommand.cs
 *   pgipc waldump <datadir> [--start X/X] [--limit N]: lists the WAL
 *   records of a data directory (pg_waldump). The work is in Core
 *   (PgIpc.Wal.WalDump); this only parses and checks the arguments.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using PgIpc.Wal;

namespace PgIpc.Cli;

internal static class WalDumpCommand
{
    public static Command Create()
    {
        Argument<string> dir = new("datadir") { Description = "The cluster's data directory (its pg_wal and global/pg_control are read, nothing is written)." };
        dir.Validators.Add(r =>
        {
            string d = r.GetValueOrDefault<string>() ?? "";
            if (!Directory.Exists(d))
                r.AddError($"datadir {d}: no such directory");
        });
        Option<string?> start = new("--start") { Description = "The LSN (X/X) to start at; default: the first record of the oldest segment." };
        start.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string?>() is { } s && !WalFormat.TryParseLsn(s, out _))
                r.AddError($"--start {s}: not an LSN (X/X, hexadecimal)");
        });
        Option<long> limit = new("--limit") { Description = "List at most this many records.", DefaultValueFactory = _ => long.MaxValue };
        limit.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<long>() < 1)
                r.AddError($"--limit must be at least 1 (got {r.GetValueOrDefault<long>()})");
        });
        var c = new Command("waldump", "List the write-ahead log records of a data directory (LSN, resource manager, length, previous record, description), as pg_waldump does.")
        {
            dir, start, limit,
        };
        c.SetAction(r =>
        {
            ulong? from = r.GetValue(start) is { } s && WalFormat.TryParseLsn(s, out ulong lsn) ? lsn : null;
            WalDump.Run(r.GetValue(dir)!, r.InvocationConfiguration.Output, from, r.GetValue(limit));
            return 0;
        });
        return c;
    }
}
