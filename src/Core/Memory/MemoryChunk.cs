/*-------------------------------------------------------------------------
 * MemoryChunk.cs
 *   The 16-byte header in front of every chunk a MemoryContext hands out,
 *   the constants shared by the context kinds, and the debug helpers
 *   (sentinel byte, CLOBBER_FREED_MEMORY pattern).
 *
 * NOTES
 *   Mirrors PostgreSQL's src/include/utils/memutils_memorychunk.h (the
 *   MemoryChunk header whose low bits name the context kind) and the
 *   MEMORY_CONTEXT_CHECKING / CLOBBER_FREED_MEMORY parts of memdebug.c.
 *
 *   PostgreSQL's header is 8 bytes and finds its block by an offset and
 *   the context through the block. Ours is 16 bytes, the MAXALIGN, so the
 *   user pointer after it stays 16-byte aligned, and it names the owning
 *   context by an index into MemoryContext's process-wide registry table:
 *   no GCHandle and no managed reference ever lives in native memory.
 *
 *     0        4           8        12       16
 *     +--------+-----------+--------+--------+------------- user data
 *     | Magic  | ContextId |  Size  |  Aux   | ...
 *     +--------+-----------+--------+--------+-------------
 *
 *   Magic = LiveMagic | kind while allocated, FreedMagic | kind once
 *   freed, 0x7F7F7F7F after a debug reset clobbered it: the check on
 *   pfree catches double frees and (in debug mode) use after reset.
 *   Size/Aux per kind: AllocSet: capacity / requested size (for a large
 *   chunk, which may be huge, the capacity is taken from its block and
 *   Aux is the requested size's low 32 bits); Generation:
 *   requested size / offset from the block start; Slab: the fixed object
 *   size / offset from the block start.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Memory;

/// <summary>
/// Header before each chunk. Process-local (never in shared memory). Written only by the
/// owning context's thread: at allocation (all fields) and at free (Magic).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct MemoryChunk
{
    /// <summary>LiveMagic | kind, or FreedMagic | kind.</summary>
    public uint Magic;
    /// <summary>Index of the owning context in MemoryContext's registry.</summary>
    public int ContextId;
    /// <summary>Per kind: see the file banner.</summary>
    public uint Size;
    /// <summary>Per kind: see the file banner.</summary>
    public uint Aux;

    public const int HeaderSize = 16;
    public const uint MagicMask = 0xFFFF_FF00;
    public const uint LiveMagic = 0xC0DE_A500;
    public const uint FreedMagic = 0xDEAD_F500;

    public const uint KindAllocSet = 1;
    public const uint KindAllocSetLarge = 2;
    public const uint KindGeneration = 3;
    public const uint KindSlab = 4;

    /// <summary>PostgreSQL's MAXIMUM_ALIGNOF as used here: 16 bytes.</summary>
    public const int MaxAlign = 16;
    /// <summary>PostgreSQL's MaxAllocSize: 1 GiB - 1.</summary>
    public const nuint MaxAllocSize = 0x3FFF_FFFF;
    /// <summary>PostgreSQL's MaxAllocHugeSize: SIZE_MAX / 2, the bound of MemoryContextAllocHuge.</summary>
    public static readonly nuint MaxAllocHugeSize = nuint.MaxValue / 2;
    /// <summary>Written after the requested bytes in debug mode (PostgreSQL's sentinel is 0x7E too).</summary>
    public const byte Sentinel = 0x7E;
    /// <summary>CLOBBER_FREED_MEMORY's pattern.</summary>
    public const byte Clobber = 0x7F;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint MaxAlignUp(nuint n) => (n + (MaxAlign - 1)) & ~(nuint)(MaxAlign - 1);
}
