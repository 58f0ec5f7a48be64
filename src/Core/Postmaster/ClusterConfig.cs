/*-------------------------------------------------------------------------
 * ClusterConfig.cs
 *   The cluster's module list as the supervisor built it, kept in the
 *   segment so that a handle is all a child needs to attach the same
 *   modules in the same order with the same options.
 *
 * NOTES
 *   Layout of "PgIpc.ClusterConfig" (ShmemInitStruct; written once by the
 *   supervisor's initialiser before the index entry is published, and
 *   immutable after; no lock):
 *      0  Magic        uint  (MagicValue)
 *      4  Count        int   number of modules
 *      8  EntryBytes   int   bytes of the entries that follow
 *     12  (unused)
 *     16  entries, each:
 *           int NameLength, NameLength bytes of UTF-8
 *           int FactoryLength (-1: a user's module, no factory), UTF-8
 *           int OptionsLength, OptionsLength bytes
 *   No struct type: the bytes are read and written through a span. A
 *   child reads them as input from another process: every count and
 *   length is checked against the region before use.
 *
 *   PostgreSQL's children inherit the equivalent over fork (the GUCs and
 *   the list of loaded libraries), or read them from the parameter file
 *   the postmaster writes for EXEC_BACKEND.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Text;
using PgIpc.Shmem;

namespace PgIpc.Postmaster;

/// <summary>One recorded module: its name, the factory that rebuilds it (null: the user's), its options.</summary>
internal readonly record struct ModuleRecord(string Name, string? Factory, byte[] Options);

/// <summary>The module list in the segment.</summary>
internal static class ClusterConfig
{
    public const string ShmemName = "PgIpc.ClusterConfig";
    public const uint MagicValue = 0x43464732; // "CFG2"
    public const int HeaderBytes = 16;
    public const int MaxModules = 1024;

    /// <summary>Bytes the record of <paramref name="modules"/> takes.</summary>
    public static long ShmemSize(IReadOnlyList<ShmemModule> modules)
    {
        long size = HeaderBytes;
        foreach (ShmemModule m in modules)
            size = Shmem.ShmemSize.Add(size, 12L + Encoding.UTF8.GetByteCount(m.Name) + (m.Factory is null ? 0 : Encoding.UTF8.GetByteCount(m.Factory))
                + m.SaveOptions().Length);
        return size;
    }

    /// <summary>Records the module list in a new segment (the supervisor, at every (re)creation).</summary>
    public static void Init(ShmemSegment segment, IReadOnlyList<ShmemModule> modules)
    {
        if (modules.Count > MaxModules)
            throw new ArgumentException($"at most {MaxModules} modules (asked for {modules.Count})", nameof(modules));
        long size = ShmemSize(modules);
        segment.InitStruct(ShmemName, size, r =>
        {
            Span<byte> s = r.AsSpan<byte>();
            int pos = HeaderBytes;
            foreach (ShmemModule m in modules)
            {
                pos = Put(s, pos, Encoding.UTF8.GetBytes(m.Name));
                if (m.Factory is null)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(s[pos..], -1);
                    pos += 4;
                }
                else
                    pos = Put(s, pos, Encoding.UTF8.GetBytes(m.Factory));
                pos = Put(s, pos, m.SaveOptions());
            }
            BinaryPrimitives.WriteInt32LittleEndian(s[4..], modules.Count);
            BinaryPrimitives.WriteInt32LittleEndian(s[8..], pos - HeaderBytes);
            // Written last; the ShmemIndex's ready state publishes the whole struct.
            BinaryPrimitives.WriteUInt32LittleEndian(s, MagicValue);
        }, out _);
    }

    private static int Put(Span<byte> s, int pos, ReadOnlySpan<byte> bytes)
    {
        BinaryPrimitives.WriteInt32LittleEndian(s[pos..], bytes.Length);
        bytes.CopyTo(s[(pos + 4)..]);
        return pos + 4 + bytes.Length;
    }

    /// <summary>The module list as the supervisor recorded it. Throws <see cref="PgIpcException"/> on a malformed record.</summary>
    public static List<ModuleRecord> Read(ShmemSegment segment)
    {
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion r) || r.Size < HeaderBytes)
            throw new PgIpcException($"segment {segment.Handle.Id} has no {ShmemName}; it was not made by a ClusterBuilder of this version");
        ReadOnlySpan<byte> s = r.AsSpan<byte>();
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(s);
        if (magic != MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} has bad magic 0x{magic:x8}");
        int count = BinaryPrimitives.ReadInt32LittleEndian(s[4..]);
        int bytes = BinaryPrimitives.ReadInt32LittleEndian(s[8..]);
        if (count < 0 || count > MaxModules || bytes < 0 || bytes > s.Length - HeaderBytes)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is corrupt: {count} modules in {bytes} bytes of {s.Length - HeaderBytes}");
        ReadOnlySpan<byte> e = s.Slice(HeaderBytes, bytes);
        var list = new List<ModuleRecord>(count);
        int pos = 0;
        for (int i = 0; i < count; i++)
        {
            string name = Encoding.UTF8.GetString(Take(segment, e, ref pos, allowNone: false)!.Value.Span);
            ReadOnlyMemory<byte>? f = Take(segment, e, ref pos, allowNone: true);
            string? factory = f is { } fm ? Encoding.UTF8.GetString(fm.Span) : null;
            byte[] options = Take(segment, e, ref pos, allowNone: false)!.Value.ToArray();
            list.Add(new ModuleRecord(name, factory, options));
        }
        return list;
    }

    private static ReadOnlyMemory<byte>? Take(ShmemSegment segment, ReadOnlySpan<byte> e, ref int pos, bool allowNone)
    {
        if (e.Length - pos < 4)
            throw Corrupt(segment, pos);
        int n = BinaryPrimitives.ReadInt32LittleEndian(e[pos..]);
        pos += 4;
        if (n == -1 && allowNone)
            return null;
        if (n < 0 || n > e.Length - pos)
            throw Corrupt(segment, pos);
        byte[] a = e.Slice(pos, n).ToArray();
        pos += n;
        return a;
    }

    private static PgIpcException Corrupt(ShmemSegment segment, int pos)
        => new($"{ShmemName} in segment {segment.Handle.Id} is corrupt: an entry runs past its end at byte {pos}");
}
