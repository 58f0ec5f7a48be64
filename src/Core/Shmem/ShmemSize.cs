/*-------------------------------------------------------------------------
 * ShmemSize.cs
 *   Computing how big the main segment must be.
 *
 * NOTES
 *   Every subsystem states what it needs before the segment is created
 *   (PostgreSQL's CalculateShmemSize calls each XxxShmemSize; extensions call
 *   RequestAddinShmemSpace from their preload hook). The sum is taken with
 *   overflow-checked adds and multiplies (add_size / mul_size), so a huge
 *   configuration fails with a message instead of wrapping round to a small
 *   segment. Each request is rounded up to the allocator's alignment because
 *   that is what it will really cost, and a fixed slack is added for the
 *   rounding of requests not known in advance, as PostgreSQL adds 100 kB.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Shmem;

/// <summary>Overflow-checked size arithmetic (PostgreSQL's add_size / mul_size).</summary>
public static class ShmemSize
{
    /// <summary>The allocator's alignment: one cache line.</summary>
    public const int CacheLineSize = 64;

    /// <summary>a + b, or an error naming the overflow.</summary>
    public static long Add(long a, long b)
    {
        if (a < 0 || b < 0)
            throw new ArgumentOutOfRangeException(a < 0 ? nameof(a) : nameof(b), "shared memory sizes cannot be negative");
        long r = unchecked(a + b);
        if (r < a)
            throw new PgIpcException($"requested shared memory size overflows: {a} + {b}");
        return r;
    }

    /// <summary>a * b, or an error naming the overflow.</summary>
    public static long Mul(long a, long b)
    {
        if (a < 0 || b < 0)
            throw new ArgumentOutOfRangeException(a < 0 ? nameof(a) : nameof(b), "shared memory sizes cannot be negative");
        if (a == 0 || b == 0)
            return 0;
        if (a > long.MaxValue / b)
            throw new PgIpcException($"requested shared memory size overflows: {a} * {b}");
        return a * b;
    }

    /// <summary>Rounds up to a multiple of <see cref="CacheLineSize"/>, checked.</summary>
    public static long CacheLineAlign(long size) => AlignUp(size, CacheLineSize);

    /// <summary>Rounds <paramref name="size"/> up to a multiple of the power of two <paramref name="alignment"/>, checked.</summary>
    public static long AlignUp(long size, long alignment)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "alignment must be a positive power of two");
        return Add(size, alignment - 1) & ~(alignment - 1);
    }
}

/// <summary>
/// Collects every size request for a segment and totals it (RequestAddinShmemSpace, CalculateShmemSize).
/// </summary>
public sealed class ShmemSizeBuilder
{
    /// <summary>Slack for requests made after sizing (alignment waste, small late structures), as PostgreSQL's 100 kB.</summary>
    public const long Slack = 100_000;

    private readonly List<(string Name, long Size)> _requests = [];
    private long _total;

    /// <summary>Capacity of the ShmemIndex (named structures) in the segment.</summary>
    public int IndexCapacity { get; private set; } = ShmemIndex.DefaultCapacity;

    /// <summary>Each request, in order.</summary>
    public IReadOnlyList<(string Name, long Size)> Requests => _requests;

    /// <summary>Asks for <paramref name="bytes"/> more bytes on behalf of <paramref name="what"/>.</summary>
    public ShmemSizeBuilder RequestAddinShmemSpace(string what, long bytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(what);
        if (bytes < 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"shared memory request for {what} cannot be negative");
        long aligned = ShmemSize.CacheLineAlign(bytes);
        _total = ShmemSize.Add(_total, aligned);
        _requests.Add((what, bytes));
        return this;
    }

    /// <summary>Asks for <paramref name="count"/> elements of <paramref name="elementSize"/> bytes.</summary>
    public ShmemSizeBuilder RequestArray(string what, long count, long elementSize)
        => RequestAddinShmemSpace(what, ShmemSize.Mul(count, elementSize));

    /// <summary>Sets how many named structures the segment can index.</summary>
    public ShmemSizeBuilder WithIndexCapacity(int capacity)
    {
        ShmemIndex.ValidateCapacity(capacity);
        IndexCapacity = capacity;
        return this;
    }

    /// <summary>Total segment size: header, index, every request, slack; rounded up to 8 KiB.</summary>
    public long CalculateShmemSize()
    {
        long size = ShmemSegment.HeaderSize;
        size = ShmemSize.Add(size, ShmemIndex.SizeFor(IndexCapacity));
        size = ShmemSize.Add(size, _total);
        size = ShmemSize.Add(size, Slack);
        return ShmemSize.AlignUp(size, 8192);
    }
}
