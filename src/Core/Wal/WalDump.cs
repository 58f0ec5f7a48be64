/*-------------------------------------------------------------------------
 * WalDump.cs
 *   pg_waldump's core: lists the records of a data directory's WAL, one
 *   line each (LSN, resource manager, length, previous record, the
 *   manager's description and block references), and why it stopped.
 *
 * NOTES
 *   Works on the files alone (no cluster attached): the control file gives
 *   the segment size, timeline and system id; the dump starts at the first
 *   record of the oldest segment in pg_wal (or at a given LSN) and ends at
 *   the end of valid WAL, which it reports as pg_waldump does ("invalid
 *   record length at ..."), without an error exit. Records of a resource
 *   manager this process has not registered are listed by id.
 *
 *   Mirrors src/bin/pg_waldump/pg_waldump.c (XLogDumpDisplayRecord).
 *-------------------------------------------------------------------------
 */
using System.Text;

namespace PgIpc.Wal;

/// <summary>pg_waldump: lists a data directory's WAL records to a writer.</summary>
public static class WalDump
{
    /// <summary>
    /// Writes one line per record of the WAL in <paramref name="dataDirectory"/> to <paramref name="output"/>, from
    /// <paramref name="start"/> (default: the first record of the oldest segment), at most <paramref name="limit"/>
    /// records, then the end of WAL line. Returns the number of records listed. Throws <see cref="PgIpcException"/>
    /// when the directory has no control file.
    /// </summary>
    public static long Run(string dataDirectory, TextWriter output, ulong? start = null, long limit = long.MaxValue)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        ArgumentNullException.ThrowIfNull(output);
        ControlFileData cf = ControlFile.Read(dataDirectory)
            ?? throw new PgIpcException($"\"{dataDirectory}\" has no control file (global/pg_control): not a data directory with WAL");
        var geo = new WalGeometry(cf.SegmentSize);
        string walDir = Path.Combine(dataDirectory, "pg_wal");
        using var reader = new WalReader(walDir, geo, cf.Timeline, cf.SystemId);
        ulong from;
        if (start is { } s)
            from = s;
        else
        {
            ulong? oldest = null;
            foreach (string f in Directory.EnumerateFiles(walDir))
                if (geo.TryParseFileName(Path.GetFileName(f), out uint tli, out ulong segno) && tli == cf.Timeline && (oldest is null || segno < oldest))
                    oldest = segno;
            if (oldest is null)
            {
                output.WriteLine($"no WAL segment of timeline {cf.Timeline} in {walDir}");
                return 0;
            }
            ulong? first = reader.FindFirstRecord(oldest.Value);
            if (first is null)
            {
                output.WriteLine($"could not find a record in segment {geo.FileName(cf.Timeline, oldest.Value)}: {reader.EndReason}");
                return 0;
            }
            from = first.Value;
        }
        output.WriteLine($"# control file: state {cf.State}, checkpoint {WalFormat.FormatLsn(cf.CheckPoint)}, redo {WalFormat.FormatLsn(cf.Redo)}, timeline {cf.Timeline}, segment size {cf.SegmentSize}");
        reader.Seek(from);
        long n = 0;
        var line = new StringBuilder();
        while (n < limit && reader.ReadRecord(out DecodedRecord r))
        {
            line.Clear();
            line.Append("rmgr: ").Append(WalResourceManagers.NameOf(r.RmId).PadRight(11))
                .Append(" len (rec/tot): ").Append(r.TotalLength.ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(6))
                .Append('/').Append(((int)(r.EndLsn - r.Lsn)).ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(6))
                .Append(", lsn: ").Append(WalFormat.FormatLsn(r.Lsn))
                .Append(", prev ").Append(WalFormat.FormatLsn(r.Prev))
                .Append(", desc: ");
            if (WalResourceManagers.Find(r.RmId) is { } rm)
                rm.Describe(line, r);
            else
                line.Append("info ").Append(r.Info.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            WalResourceManagers.DescribeBlocks(line, r);
            output.WriteLine(line.ToString());
            n++;
        }
        if (n < limit)
            output.WriteLine($"# end of WAL at {WalFormat.FormatLsn(reader.NextLsn)}: {reader.EndReason}");
        return n;
    }
}
