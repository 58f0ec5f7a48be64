/*-------------------------------------------------------------------------
 * ShmemSizeTests.cs
 *   Size arithmetic (add_size / mul_size), the size builder and typed
 *   offsets.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Shmem;

public sealed class ShmemSizeTests
{
    [Test]
    public void AddAndMulAreCheckedAndNameTheOverflow()
    {
        Assert.That(ShmemSize.Add(3, 4), Is.EqualTo(7));
        Assert.That(ShmemSize.Mul(1 << 20, 1 << 20), Is.EqualTo(1L << 40));
        Assert.That(ShmemSize.Mul(0, long.MaxValue), Is.Zero);
        var ex = Assert.Throws<PgIpcException>(() => ShmemSize.Add(long.MaxValue, 1));
        Assert.That(ex!.Message, Does.Contain("overflows"));
        Assert.Throws<PgIpcException>(() => ShmemSize.Mul(long.MaxValue / 2, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShmemSize.Add(-1, 1));
    }

    [Test]
    public void AlignmentRoundsUpToCacheLines()
    {
        Assert.That(ShmemSize.CacheLineAlign(1), Is.EqualTo(64));
        Assert.That(ShmemSize.CacheLineAlign(64), Is.EqualTo(64));
        Assert.That(ShmemSize.CacheLineAlign(65), Is.EqualTo(128));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShmemSize.AlignUp(10, 3));
        Assert.Throws<PgIpcException>(() => ShmemSize.CacheLineAlign(long.MaxValue));
    }

    [Test]
    public void BuilderTotalsRequestsAndCoversWhatTheyAllocate()
    {
        var b = new ShmemSizeBuilder()
            .RequestAddinShmemSpace("a", 100)
            .RequestArray("b", 1000, 24)
            .WithIndexCapacity(64);
        long total = b.CalculateShmemSize();
        Assert.That(b.Requests, Has.Count.EqualTo(2));
        Assert.That(total % 8192, Is.Zero);
        Assert.That(total, Is.GreaterThanOrEqualTo(ShmemSegment.MinimumSize(64) + 128 + 24_000 + ShmemSizeBuilder.Slack));

        using ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("builder"), b);
        try
        {
            seg.InitStruct("a", 100, out _);
            seg.InitStruct("b", 24_000, out _);
            Assert.That(seg.FreeBytes, Is.GreaterThanOrEqualTo(ShmemSizeBuilder.Slack - 8192));
        }
        finally
        {
            seg.Destroy();
        }
    }

    [Test]
    public void BuilderRejectsBadRequestsAndOverflow()
    {
        var b = new ShmemSizeBuilder();
        Assert.Throws<ArgumentOutOfRangeException>(() => b.RequestAddinShmemSpace("neg", -1));
        Assert.Throws<ArgumentException>(() => b.RequestAddinShmemSpace("", 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.WithIndexCapacity(100));
        b.RequestAddinShmemSpace("big", long.MaxValue / 2);
        Assert.Throws<PgIpcException>(() => b.RequestAddinShmemSpace("big2", long.MaxValue / 2 + 1000));
        Assert.Throws<PgIpcException>(() => new ShmemSizeBuilder().RequestArray("arr", long.MaxValue, 2));
    }

    [Test]
    public unsafe void OffsetsRoundTripThroughAnyBase()
    {
        byte* baseA = (byte*)0x10000;
        byte* baseB = (byte*)0x7f000000;
        var off = ShmemOffset<long>.FromPointer(baseA, (long*)(baseA + 4096));
        Assert.That(off.Value, Is.EqualTo(4096));
        Assert.That((nint)off.ToPointer(baseB), Is.EqualTo((nint)(baseB + 4096)));
        Assert.That(ShmemOffset<long>.Null.IsNull, Is.True);
        Assert.That(ShmemOffset<long>.Null.ToPointer(baseA) == null, Is.True);
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new ShmemOffset<long>(-8));
    }
}
