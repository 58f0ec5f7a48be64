/*-------------------------------------------------------------------------
 * BufferTag.cs
 *   The identity of a disk block: relation number, fork and block number.
 *
 * NOTES
 *   PostgreSQL's BufferTag also carries the tablespace and database oids;
 *   PgIpc has one data directory and a flat relation namespace, so the tag
 *   is three 32-bit words. It is the key of the buffer mapping table and is
 *   compared and hashed bytewise, so it has no padding.
 *
 *   Mirrors src/include/storage/buf_internals.h (BufferTag) and
 *   src/include/common/relpath.h (ForkNumber).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;

namespace PgIpc.Buffers;

/// <summary>The forks of a relation (ForkNumber). Each fork is its own file.</summary>
public enum ForkNumber
{
    /// <summary>The relation's main data fork.</summary>
    Main = 0,
    /// <summary>The free space map fork.</summary>
    FreeSpaceMap = 1,
    /// <summary>The visibility map fork.</summary>
    VisibilityMap = 2,
    /// <summary>The initialisation fork of an unlogged relation.</summary>
    Init = 3,
}

/// <summary>
/// A disk block's identity. Layout: 12 bytes.
/// <code>
///  0  RelNumber    immutable once the tag is published (buffer header lock for BufferDesc.Tag)
///  4  Fork         idem
///  8  BlockNumber  idem
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 12)]
public readonly struct BufferTag : IEquatable<BufferTag>
{
    /// <summary>The relation's file number.</summary>
    public readonly uint RelNumber;
    /// <summary>The fork of the relation.</summary>
    public readonly ForkNumber Fork;
    /// <summary>The block number within the fork.</summary>
    public readonly uint BlockNumber;

    /// <summary>Creates the tag of block <paramref name="blockNumber"/> of fork <paramref name="fork"/> of relation <paramref name="relNumber"/>.</summary>
    public BufferTag(uint relNumber, ForkNumber fork, uint blockNumber)
    {
        RelNumber = relNumber;
        Fork = fork;
        BlockNumber = blockNumber;
    }

    /// <summary>True when both tags name the same relation, fork and block.</summary>
    public bool Equals(BufferTag other) => RelNumber == other.RelNumber && Fork == other.Fork && BlockNumber == other.BlockNumber;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BufferTag t && Equals(t);

    /// <inheritdoc/>
    public override int GetHashCode() => (int)SharedHashFunction.Hash(in this);

    /// <summary>True when both tags name the same page.</summary>
    public static bool operator ==(BufferTag a, BufferTag b) => a.Equals(b);

    /// <summary>True when the tags name different pages.</summary>
    public static bool operator !=(BufferTag a, BufferTag b) => !a.Equals(b);

    /// <summary>Highest fork number (MAX_FORKNUM).</summary>
    public const ForkNumber MaxFork = ForkNumber.Init;

    /// <summary>Throws when the fork or block is out of range (a bad tag).</summary>
    public static BufferTag Create(uint relNumber, ForkNumber fork, long blockNumber)
    {
        if ((uint)fork > (uint)MaxFork)
            throw new ArgumentOutOfRangeException(nameof(fork), fork, $"unknown fork {(int)fork} of relation {relNumber}: forks are 0..{(int)MaxFork}");
        if (blockNumber < 0 || blockNumber >= BufferPool.MaxBlockNumber)
            throw new ArgumentOutOfRangeException(nameof(blockNumber), blockNumber,
                $"block {blockNumber} of relation {relNumber} fork {fork} is out of range 0..{BufferPool.MaxBlockNumber - 1}");
        return new BufferTag(relNumber, fork, (uint)blockNumber);
    }

    /// <inheritdoc/>
    public override string ToString() => $"relation {RelNumber} fork {Fork} block {BlockNumber}";
}
