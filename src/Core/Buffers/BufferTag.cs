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
    Main = 0,
    FreeSpaceMap = 1,
    VisibilityMap = 2,
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
    public readonly uint RelNumber;
    public readonly ForkNumber Fork;
    public readonly uint BlockNumber;

    public BufferTag(uint relNumber, ForkNumber fork, uint blockNumber)
    {
        RelNumber = relNumber;
        Fork = fork;
        BlockNumber = blockNumber;
    }

    public bool Equals(BufferTag other) => RelNumber == other.RelNumber && Fork == other.Fork && BlockNumber == other.BlockNumber;

    public override bool Equals(object? obj) => obj is BufferTag t && Equals(t);

    public override int GetHashCode() => (int)SharedHashFunction.Hash(in this);

    public static bool operator ==(BufferTag a, BufferTag b) => a.Equals(b);

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

    public override string ToString() => $"relation {RelNumber} fork {Fork} block {BlockNumber}";
}
