/*-------------------------------------------------------------------------
 * WalDumpCommand.cs
 *   pgipc waldump <datadir> [--start X/X] [--limit N]: lists the WAL
 *   records of a data directory (pg_waldump). The work is in Core
 *   (PgIpc.Wal.WalDump); this only parses the arguments.
 *-------------------------------------------------------------------------
 */
using PgIpc.Wal;

namespace PgIpc.Cli;

internal static class WalDumpCommand
{
    public const string Usage = "pgipc waldump <datadir> [--start X/X] [--limit N]";

    public static int Run(string[] args)
    {
        string? dir = null;
        ulong? start = null;
        long limit = long.MaxValue;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--start" when i + 1 < args.Length:
                    if (!WalFormat.TryParseLsn(args[++i], out ulong lsn))
                        throw new ArgumentException($"--start: \"{args[i]}\" is not an LSN (X/X)");
                    start = lsn;
                    break;
                case "--limit" when i + 1 < args.Length:
                    limit = long.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture);
                    break;
                default:
                    if (dir is not null || args[i].StartsWith("--", StringComparison.Ordinal))
                        throw new ArgumentException($"usage: {Usage}");
                    dir = args[i];
                    break;
            }
        }
        if (dir is null)
            throw new ArgumentException($"usage: {Usage}");
        WalDump.Run(dir, Console.Out, start, limit);
        return 0;
    }
}
