/*-------------------------------------------------------------------------
 * MemoryContextTests.cs
 *   Memory contexts: contents of many sizes survive, alignment, reset and
 *   delete return every native byte, parent deletion takes the children,
 *   budgets trip at the right size, the debug sentinel and clobbering,
 *   reset callbacks, the per-thread standard tree, and stats.
 *
 *   Loops of thousands of iterations count mismatches and assert once
 *   (per-iteration asserts crash the CLR under Wine).
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Memory;
using PgIpc.Platform;

namespace PgIpc.Tests.Memory;

public sealed unsafe class MemoryContextTests
{
    public enum Kind { AllocSet, Generation }

    private static MemoryContext Make(Kind kind, MemoryContext? parent, string name, long limit = 0, bool? debug = null)
        => kind == Kind.AllocSet
            ? AllocSetContext.Create(parent, name, limit: limit, debug: debug)
            : GenerationContext.Create(parent, name, limit: limit, debug: debug);

    private static byte Pattern(int chunk, int offset) => (byte)(chunk * 31 + offset * 7 + 1);

    [Test]
    public void ManySizesKeepTheirContents([Values] Kind kind, [Values] bool debug)
    {
        long before = MemoryContext.NativeBytesAllocated;
        MemoryContext ctx = Make(kind, null, "sizes", debug: debug);
        var rng = new Random(42);
        const int N = 3000;
        var ptrs = new nint[N];
        var sizes = new int[N];
        int mismatches = 0, misaligned = 0;
        for (int i = 0; i < N; i++)
        {
            int size = (i % 10) switch { 0 => rng.Next(8193, 40_000), 1 or 2 => rng.Next(1024, 8192), _ => rng.Next(0, 300) };
            byte* p = (byte*)ctx.Alloc((nuint)size);
            if (((nint)p & 15) != 0) misaligned++;
            for (int j = 0; j < size; j++) p[j] = Pattern(i, j);
            ptrs[i] = (nint)p;
            sizes[i] = size;
        }
        // Free every third chunk, reallocate every fifth (grow or shrink), then check the rest.
        for (int i = 0; i < N; i += 3)
        {
            MemoryContext.Free((void*)ptrs[i]);
            ptrs[i] = 0;
        }
        for (int i = 1; i < N; i += 5)
        {
            if (ptrs[i] == 0)
                continue; // freed above
            int newSize = (i % 2 == 0) ? sizes[i] / 2 : sizes[i] * 2 + 100;
            byte* p = (byte*)MemoryContext.Realloc((void*)ptrs[i], (nuint)newSize);
            if (((nint)p & 15) != 0) misaligned++;
            int keep = Math.Min(newSize, sizes[i]);
            for (int j = 0; j < keep; j++) if (p[j] != Pattern(i, j)) { mismatches++; break; }
            for (int j = 0; j < newSize; j++) p[j] = Pattern(i, j);
            ptrs[i] = (nint)p;
            sizes[i] = newSize;
        }
        // Fill the freed slots again (free-list reuse) and check everything.
        for (int i = 0; i < N; i += 3)
        {
            byte* p = (byte*)ctx.Alloc((nuint)sizes[i]);
            for (int j = 0; j < sizes[i]; j++) p[j] = Pattern(i, j);
            ptrs[i] = (nint)p;
        }
        int wrongOwner = 0;
        for (int i = 0; i < N; i++)
        {
            byte* p = (byte*)ptrs[i];
            for (int j = 0; j < sizes[i]; j++) if (p[j] != Pattern(i, j)) { mismatches++; break; }
            if (!ReferenceEquals(MemoryContext.GetChunkContext(p), ctx)) wrongOwner++;
        }
        ctx.Check();
        Assert.That(mismatches, Is.Zero, "chunks whose contents changed");
        Assert.That(misaligned, Is.Zero, "pointers not 16-byte aligned");
        Assert.That(wrongOwner, Is.Zero);
        Assert.That(ctx.GetCounters().Chunks, Is.EqualTo(N));
        ctx.Delete();
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
    }

    [Test]
    public void ResetReturnsToTheKeeperBlock([Values] Kind kind)
    {
        long before = MemoryContext.NativeBytesAllocated;
        MemoryContext ctx = Make(kind, null, "reset");
        MemoryContextCounters empty = ctx.GetCounters();
        long baseline = MemoryContext.NativeBytesAllocated;
        Assert.That(empty.Blocks, Is.EqualTo(1), "keeper block only");
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < 10_000; i++)
                ctx.Alloc((nuint)(i % 500 + (i % 97 == 0 ? 20_000 : 0)));
            Assert.That(MemoryContext.NativeBytesAllocated, Is.GreaterThan(baseline + 1_000_000));
            ctx.Reset();
            Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(baseline), $"round {round}");
            Assert.That(ctx.GetCounters(), Is.EqualTo(empty));
        }
        ctx.Delete();
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
    }

    [Test]
    public void RetainOnResetReusesBlocksAndDeleteReturnsThem()
    {
        long before = MemoryContext.NativeBytesAllocated;
        var ctx = AllocSetContext.Create(null, "retain", retainOnReset: 64L << 20);
        long afterFirst = 0;
        int bad = 0;
        for (int round = 0; round < 4; round++)
        {
            for (int i = 0; i < 50_000; i++)
            {
                byte* p = (byte*)ctx.Alloc(64);
                p[0] = (byte)i;
                if (p[0] != (byte)i) bad++;
            }
            if (round == 0) afterFirst = MemoryContext.NativeBytesAllocated;
            else if (MemoryContext.NativeBytesAllocated != afterFirst) bad++;
            ctx.Reset();
            Assert.That(ctx.GetCounters().Chunks, Is.Zero);
        }
        Assert.That(bad, Is.Zero, "the same blocks are reused every round");
        Assert.That(ctx.MemAllocated(false), Is.EqualTo(afterFirst - before - 80), "retained blocks stay counted (the 80 B free-list array is not)");
        ctx.Delete();
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
    }

    [Test]
    public void DeletingAParentDeletesItsSubtree()
    {
        long before = MemoryContext.NativeBytesAllocated;
        int liveBefore = MemoryContext.LiveContexts;
        var root = AllocSetContext.Create(null, "root");
        var a = AllocSetContext.Create(root, "a");
        var b = GenerationContext.Create(root, "b");
        var a1 = SlabContext.Create(a, "a1", 8192, 48);
        var a2 = AllocSetContext.Create(a, "a2");
        foreach (MemoryContext c in new MemoryContext[] { root, a, b, a2 })
            for (int i = 0; i < 200; i++) c.Alloc(100);
        for (int i = 0; i < 500; i++) a1.Alloc(48);
        Assert.That(root.Children, Is.EquivalentTo(new MemoryContext[] { a, b }));
        Assert.That(MemoryContext.LiveContexts, Is.EqualTo(liveBefore + 5));

        a.Reset(); // reset deletes the children
        Assert.That(a1.IsDeleted && a2.IsDeleted, Is.True);
        Assert.That(a.IsDeleted, Is.False);
        Assert.That(a.Children, Is.Empty);

        var a3 = AllocSetContext.Create(a, "a3");
        a3.Alloc(10_000);
        root.Delete();
        Assert.That(new[] { root.IsDeleted, a.IsDeleted, b.IsDeleted, a3.IsDeleted }, Is.All.True);
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
        Assert.That(MemoryContext.LiveContexts, Is.EqualTo(liveBefore));
        Assert.Throws<InvalidOperationException>(() => root.Alloc(10));
    }

    [Test]
    public void BudgetTripsAtTheLimit()
    {
        // 8 KiB blocks, 1000-byte requests in the 1024 class (1040 with the header): 7 per block.
        var ctx = AllocSetContext.Create(null, "work_mem", 8192, 8192, limit: 64 * 1024);
        int ok = 0;
        MemoryContextLimitExceededException? caught = null;
        try
        {
            for (int i = 0; i < 1000; i++) { ctx.Alloc(1000); ok++; }
        }
        catch (MemoryContextLimitExceededException e) { caught = e; }
        Assert.That(caught, Is.Not.Null);
        Assert.That(ok, Is.EqualTo(8 * 7));
        Assert.That(caught!.Requested, Is.EqualTo(1000));
        Assert.That(caught.Limit, Is.EqualTo(64 * 1024));
        Assert.That(caught.ContextName, Is.EqualTo("work_mem"));
        Assert.That(caught.Message, Is.EqualTo("out of memory in context work_mem: requested 1000, limit 65536"));
        Assert.That(caught, Is.InstanceOf<PgIpcException>());
        Assert.That(ctx.MemAllocated(false), Is.EqualTo(64 * 1024));
        // Freed chunks are reused without touching the budget; after a reset the budget is available again.
        ctx.Reset();
        Assert.DoesNotThrow(() => { for (int i = 0; i < 56; i++) ctx.Alloc(1000); });
        ctx.Delete();
    }

    [Test]
    public void BudgetCountsTheSubtree()
    {
        var parent = AllocSetContext.Create(null, "sort", 8192, 8192, limit: 100_000);
        var child = GenerationContext.Create(parent, "tuples", 8192, 8192);
        var e = Assert.Throws<MemoryContextLimitExceededException>(() => { for (int i = 0; i < 10_000; i++) child.Alloc(500); })!;
        Assert.That(e.ContextName, Is.EqualTo("sort"));
        Assert.That(parent.MemAllocated(true), Is.LessThanOrEqualTo(100_000));
        Assert.That(parent.MemAllocated(true), Is.EqualTo(parent.MemAllocated(false) + child.MemAllocated(false)));
        var big = Assert.Throws<MemoryContextLimitExceededException>(() => parent.Alloc(200_000))!;
        Assert.That(big.Requested, Is.EqualTo(200_000));
        parent.Delete();
    }

    [Test]
    public void SentinelCatchesAnOverrunOnFree([Values] Kind kind)
    {
        MemoryContext ctx = Make(kind, null, "overrun", debug: true);
        byte* p = (byte*)ctx.Alloc(40);
        p[40] = 0xAA; // one byte past the request
        var e = Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Free(p))!;
        Assert.That(e.ContextName, Is.EqualTo("overrun"));
        Assert.That(e.Message, Does.Contain("sentinel"));
        p[40] = 0x7E;
        MemoryContext.Free(p);
        ctx.Delete();
    }

    [Test]
    public void SentinelCatchesAnOverrunOnResetAndRealloc()
    {
        var ctx = AllocSetContext.Create(null, "checked", debug: true);
        byte* big = (byte*)ctx.Alloc(20_000);
        big[20_000] = 1;
        Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Realloc(big, 30_000));
        Assert.Throws<MemoryChunkCorruptedException>(() => ctx.Reset());
        big[20_000] = 0x7E;
        ctx.Reset();
        var slab = SlabContext.Create(null, "slab", 4096, 24, debug: true);
        byte* s = (byte*)slab.Alloc(24);
        s[24] = 0;
        Assert.Throws<MemoryChunkCorruptedException>(() => slab.Check());
        s[24] = 0x7E;
        slab.Delete();
        ctx.Delete();
    }

    [Test]
    public void FreedMemoryIsClobberedAndDoubleFreeIsCaught()
    {
        var ctx = AllocSetContext.Create(null, "clobber", debug: true);
        byte* p = (byte*)ctx.Alloc(64);
        new Span<byte>(p, 64).Fill(1);
        MemoryContext.Free(p);
        Assert.That(new Span<byte>(p + 8, 56).IndexOfAnyExcept((byte)0x7F), Is.EqualTo(-1), "freed bytes after the free-list link");
        var e = Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Free(p))!;
        Assert.That(e.Message, Does.Contain("double free"));
        ctx.Delete();
    }

    [Test]
    public void UseAfterResetIsCaughtInDebugMode()
    {
        var ctx = AllocSetContext.Create(null, "reset-then-free", debug: true);
        byte* p = (byte*)ctx.Alloc(100);
        ctx.Reset();
        Assert.That(p[0], Is.EqualTo(0x7F));
        var e = Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Free(p))!;
        Assert.That(e.Message, Does.Contain("freed or reset"));
        ctx.Delete();
    }

    [Test]
    public void ForeignPointerIsRejected()
    {
        byte* buf = stackalloc byte[64];
        new Span<byte>(buf, 64).Clear();
        Assert.Throws<MemoryChunkCorruptedException>(() => MemoryContext.Free(buf + 32));
    }

    [Test]
    public void ThousandsOfCreateDeleteCyclesLeakNothing()
    {
        long before = MemoryContext.NativeBytesAllocated;
        long allocsBefore = MemoryContext.NativeAllocationsOutstanding;
        int liveBefore = MemoryContext.LiveContexts;
        var parent = AllocSetContext.Create(null, "cycles");
        for (int i = 0; i < 5000; i++)
        {
            MemoryContext c = (i % 3) switch
            {
                0 => AllocSetContext.Create(parent, "c", AllocSetContext.SmallInitBlockSize, AllocSetContext.SmallMaxBlockSize),
                1 => GenerationContext.Create(parent, "g", 1024, 8192),
                _ => SlabContext.Create(parent, "s", 2048, 40),
            };
            for (int j = 0; j < 20; j++)
            {
                void* p = c.Alloc(c is SlabContext ? 40u : (nuint)(j * 37));
                if (j % 2 == 0) MemoryContext.Free(p);
            }
            if (i % 10 == 0) c.Alloc(c is SlabContext ? 40u : 50_000u);
            c.Delete();
        }
        parent.Delete();
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
        Assert.That(MemoryContext.NativeAllocationsOutstanding, Is.EqualTo(allocsBefore));
        Assert.That(MemoryContext.LiveContexts, Is.EqualTo(liveBefore));
    }

    [Test]
    public void GenerationReturnsABlockWhenAllItsChunksAreFreed()
    {
        var ctx = GenerationContext.Create(null, "fifo", 8192, 8192);
        var q = new Queue<nint>();
        int peakBlocks = 0;
        for (int i = 0; i < 20_000; i++)
        {
            q.Enqueue((nint)ctx.Alloc(200));
            if (q.Count > 100) MemoryContext.Free((void*)q.Dequeue());
            peakBlocks = Math.Max(peakBlocks, (int)ctx.GetCounters().Blocks);
        }
        Assert.That(peakBlocks, Is.LessThanOrEqualTo(5), "a FIFO of 100 x 200 B needs about 3 blocks of 8 KiB");
        while (q.Count > 0) MemoryContext.Free((void*)q.Dequeue());
        Assert.That(ctx.GetCounters().Chunks, Is.Zero);
        Assert.That(ctx.GetCounters().Blocks, Is.LessThanOrEqualTo(2));
        ctx.Delete();
    }

    [Test]
    public void SlabReusesFreedObjectsAndReleasesEmptyBlocks()
    {
        long before = MemoryContext.NativeBytesAllocated;
        var slab = SlabContext.Create(null, "nodes", 8192, 100);
        var ptrs = new nint[10_000];
        for (int i = 0; i < ptrs.Length; i++) { ptrs[i] = (nint)slab.Alloc(100); *(int*)ptrs[i] = i; }
        long full = slab.GetCounters().Blocks;
        Assert.That(full, Is.EqualTo((10_000 + slab.ChunksPerBlock - 1) / slab.ChunksPerBlock));
        int bad = 0;
        for (int i = 0; i < ptrs.Length; i++) if (*(int*)ptrs[i] != i) bad++;
        for (int i = 0; i < ptrs.Length; i++) MemoryContext.Free((void*)ptrs[i]);
        Assert.That(bad, Is.Zero);
        Assert.That(slab.GetCounters().Blocks, Is.EqualTo(1), "one empty block kept as spare");
        Assert.Throws<InvalidAllocRequestException>(() => slab.Alloc(101));
        slab.Delete();
        Assert.That(MemoryContext.NativeBytesAllocated, Is.EqualTo(before));
    }

    [Test]
    public void ResetCallbacksRunLastFirstAndOnce()
    {
        var ctx = AllocSetContext.Create(null, "cb");
        var order = new List<int>();
        ctx.RegisterResetCallback(() => order.Add(1));
        ctx.RegisterResetCallback(() => order.Add(2));
        ctx.Reset();
        ctx.Reset();
        ctx.RegisterResetCallback(() => order.Add(3));
        ctx.Delete();
        Assert.That(order, Is.EqualTo(new[] { 2, 1, 3 }));
    }

    [Test]
    public void StandardTreeIsPerThread()
    {
        var tops = new MemoryContext[2];
        var names = new string[2];
        TestThreads.Run(2, i =>
        {
            tops[i] = MemoryContext.TopMemoryContext;
            names[i] = string.Join(",", tops[i].Children.Select(c => c.Name).Order());
            byte* p = (byte*)MemoryContext.Palloc(32);
            p[0] = 1;
            MemoryContext.Free(p);
            MemoryContext.DeleteStandardTree();
        });
        Assert.That(tops[0], Is.Not.SameAs(tops[1]));
        Assert.That(names[0], Is.EqualTo("CacheMemoryContext,ErrorContext,MessageContext,TopTransactionContext"));
        Assert.That(tops[0].IsDeleted && tops[1].IsDeleted, Is.True);
    }

    [Test]
    public void StatsPrintAnIndentedTreeWithTotals()
    {
        var root = AllocSetContext.Create(null, "StatsRoot");
        var child = GenerationContext.Create(root, "StatsChild", limit: 1 << 20);
        var grandchild = SlabContext.Create(child, "StatsGrandchild", 8192, 64);
        for (int i = 0; i < 10; i++) { root.Alloc(100); child.Alloc(100); grandchild.Alloc(64); }
        string text = MemoryContextStats.Format(root);
        string[] lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[0], Does.StartWith("StatsRoot: "));
        Assert.That(lines[1], Does.StartWith("  StatsChild: ").And.Contain("(limit 1048576)"));
        Assert.That(lines[2], Does.StartWith("    StatsGrandchild: ").And.Contain("10 chunks"));
        Assert.That(lines[3], Does.StartWith("Grand total: "));
        MemoryContextCounters t = MemoryContextStats.Total(root);
        Assert.That(t.TotalSpace, Is.EqualTo(root.MemAllocated(true)));
        Assert.That(t.Chunks, Is.EqualTo(30));
        Assert.That(t.Blocks, Is.EqualTo(3));
        Assert.That(t.FreeSpace, Is.GreaterThan(0).And.LessThan(t.TotalSpace));
        root.Delete();
    }
}
