/*-------------------------------------------------------------------------
 * MemoryContextStats.cs
 *   MemoryContextStats: a context tree's blocks, chunks, free and used
 *   native bytes, printed as an indented tree with a grand total.
 *
 * NOTES
 *   Mirrors MemoryContextStats / MemoryContextStatsInternal in PostgreSQL's
 *   src/backend/utils/mmgr/mcxt.c and the per-kind *Stats functions. The
 *   line format follows PostgreSQL's:
 *
 *     TopMemoryContext: 8192 total in 1 blocks; 7936 free; 256 used; 4 chunks
 *       MessageContext: ...
 *     Grand total: 41024 bytes in 6 blocks; 40000 free; 1024 used; 9 chunks
 *
 *   "total" is native bytes held in blocks; "used" is chunks in use plus
 *   their headers plus the block headers; "free" is the rest (free lists,
 *   the unused tail of blocks). "chunks" counts live chunks (PostgreSQL's
 *   line counts free chunks instead). Not a hot path: it allocates.
 *   Call it from the owning thread.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Memory;

/// <summary>Statistics of a tree of memory contexts, as MemoryContextStats() prints them.</summary>
public static class MemoryContextStats
{
    /// <summary>The tree under <paramref name="root"/> with a grand total, as text.</summary>
    public static string Format(MemoryContext root, int maxDepth = int.MaxValue)
    {
        var w = new StringWriter();
        Write(w, root, maxDepth);
        return w.ToString();
    }

    /// <summary>Writes the tree under <paramref name="root"/> and a grand total; returns the total.</summary>
    public static MemoryContextCounters Write(TextWriter writer, MemoryContext root, int maxDepth = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(root);
        long blocks = 0, chunks = 0, free = 0, total = 0;
        Walk(writer, root, 0, maxDepth, ref blocks, ref chunks, ref free, ref total);
        writer.WriteLine($"Grand total: {total} bytes in {blocks} blocks; {free} free; {total - free} used; {chunks} chunks");
        return new MemoryContextCounters(blocks, chunks, free, total);
    }

    /// <summary>The subtree's counters summed (no text).</summary>
    public static MemoryContextCounters Total(MemoryContext root)
        => Write(TextWriter.Null, root, -1);

    private static void Walk(TextWriter w, MemoryContext c, int depth, int maxDepth,
        ref long blocks, ref long chunks, ref long free, ref long total)
    {
        MemoryContextCounters k = c.GetCounters();
        blocks += k.Blocks; chunks += k.Chunks; free += k.FreeSpace; total += k.TotalSpace;
        if (depth <= maxDepth)
        {
            w.Write(new string(' ', depth * 2));
            w.WriteLine($"{c.Name}: {k.TotalSpace} total in {k.Blocks} blocks; {k.FreeSpace} free; {k.UsedSpace} used; {k.Chunks} chunks{(c.Limit > 0 ? $" (limit {c.Limit})" : "")}");
        }
        foreach (MemoryContext child in c.Children)
            Walk(w, child, depth + 1, maxDepth, ref blocks, ref chunks, ref free, ref total);
    }
}
