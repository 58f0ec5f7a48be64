/*-------------------------------------------------------------------------
 * AllocHugeTests.cs
 *   MemoryContextAllocHuge: Alloc refuses a request past MaxAllocSize
 *   (1 GiB - 1) with a clear error; AllocHuge in an AllocSet takes it (a
 *   real 1 GiB + 4 KiB request, and one past 4 GiB where the machine has
 *   the memory: only the first and last pages are touched, so the test is
 *   fast); the debug sentinel after a huge chunk still catches an overrun;
 *   a Generation context takes huge requests up to about 4 GiB; Slab
 *   refuses them.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Memory;

namespace PgIpc.Tests.Memory;

public sealed unsafe class AllocHugeTests
{
    private static bool HasMemory(long bytes)
        => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes >= bytes;

    /// <summary>AllocHuge, or null (with a message) when the OS would not give the memory: not what is tested here.</summary>
    private static byte* TryAllocHuge(MemoryContext c, nuint size)
    {
        try
        {
            return (byte*)c.AllocHuge(size);
        }
        catch (MemoryContextLimitExceededException e) when (e.Limit < 0)
        {
            TestContext.Out.WriteLine($"the OS refused {size} bytes ({e.Message}): not tried");
            return null;
        }
    }

    [Test]
    public void AllocRefusesPastMaxAllocSizeAndAllocHugeTakesIt()
    {
        Assert.That(MemoryContext.MaxAllocSize, Is.EqualTo((1L << 30) - 1));
        Assert.That(MemoryContext.MaxAllocHugeSize, Is.EqualTo(long.MaxValue));
        MemoryContext c = AllocSetContext.Create(null, "huge");
        try
        {
            var ex = Assert.Throws<InvalidAllocRequestException>(() => c.Alloc((nuint)MemoryContext.MaxAllocSize + 1));
            Assert.That(ex!.Message, Does.Contain("MaxAllocSize").And.Contain("AllocHuge").And.Contain("huge"));
            Assert.Throws<InvalidAllocRequestException>(() => c.AllocHuge((nuint)MemoryContext.MaxAllocHugeSize + 1));
            byte* small = (byte*)c.AllocHuge(100); // under the limit: an ordinary chunk
            MemoryContext.Free(small);

            if (!HasMemory(4L << 30))
            {
                TestContext.Out.WriteLine("fewer than 4 GiB available: the 1 GiB allocation is not tried");
                return;
            }
            long before = c.MemAllocated(recurse: false);
            nuint size = (nuint)(1L << 30) + 4096 + 5;
            byte* p = TryAllocHuge(c, size);
            if (p == null)
                return;
            p[0] = 1;
            p[size - 1] = 2; // the first and the last page
            Assert.That(p[0] + p[size - 1], Is.EqualTo(3));
            Assert.That((ulong)MemoryContext.GetChunkSpace(p), Is.GreaterThanOrEqualTo((ulong)size));
            Assert.That(c.MemAllocated(recurse: false) - before, Is.GreaterThan((long)size));
            MemoryContext.Free(p);
            Assert.That(c.MemAllocated(recurse: false), Is.EqualTo(before), "the huge block went back to the OS");
        }
        finally
        {
            c.Delete();
        }
    }

    [Test]
    public void TheDebugSentinelGuardsAHugeChunkPastFourGiB()
    {
        if (!HasMemory(16L << 30))
        {
            TestContext.Out.WriteLine("fewer than 16 GiB available: the 5 GiB allocation is not tried");
            return;
        }
        MemoryContext c = AllocSetContext.Create(null, "huge-debug", debug: true);
        try
        {
            // Past 4 GiB: the chunk header's 32-bit fields cannot hold the size; the sentinel must still be found.
            nuint size = unchecked((nuint)(5L << 30)) + 3;
            byte* p = TryAllocHuge(c, size);
            if (p == null)
                return;
            p[0] = 7;
            p[size - 1] = 9;
            Assert.That((ulong)MemoryContext.GetChunkSpace(p), Is.GreaterThanOrEqualTo((ulong)size));
            c.Check();
            MemoryContext.Free(p); // sentinel intact: no error

            byte* q = (byte*)c.AllocHuge(size);
            q[size] = 0; // one byte past the end: over the sentinel
            var ex = Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Free(q));
            Assert.That(ex!.Message, Does.Contain("sentinel"));
            q[size] = MemoryChunk.Sentinel; // repaired, so the chunk can be freed and the context deleted
            MemoryContext.Free(q);
        }
        finally
        {
            c.Delete();
        }
    }

    [Test]
    public void GenerationTakesHugeRequestsUpToFourGiBAndSlabRefusesThem()
    {
        MemoryContext g = GenerationContext.Create(null, "gen", debug: true);
        MemoryContext s = SlabContext.Create(null, "slab", 8192, 64);
        try
        {
            var ex = Assert.Throws<InvalidAllocRequestException>(() => g.Alloc((nuint)MemoryContext.MaxAllocSize + 1));
            Assert.That(ex!.Message, Does.Contain("AllocHuge"));
            Assert.Throws<InvalidAllocRequestException>(() => g.AllocHuge((nuint)GenerationContext.MaxHugeChunkSize + 1));
            Assert.Catch<Exception>(() => s.AllocHuge((nuint)MemoryContext.MaxAllocSize + 1));
            if (!HasMemory(4L << 30))
            {
                TestContext.Out.WriteLine("fewer than 4 GiB available: the 1 GiB allocation is not tried");
                return;
            }
            nuint size = (nuint)(1L << 30) + 17;
            byte* p = TryAllocHuge(g, size);
            if (p == null)
                return;
            p[0] = 1;
            p[size - 1] = 2;
            Assert.That((ulong)MemoryContext.GetChunkSpace(p), Is.GreaterThanOrEqualTo((ulong)size));
            g.Check();
            MemoryContext.Free(p);
            Assert.That(g.MemAllocated(recurse: false), Is.LessThan(1L << 20), "the huge block went back to the OS");
        }
        finally
        {
            g.Delete();
            s.Delete();
        }
    }
}
