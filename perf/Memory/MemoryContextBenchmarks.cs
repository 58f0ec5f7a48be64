/*-------------------------------------------------------------------------
 * MemoryContextBenchmarks.cs
 *   Micro-benchmarks of the per-process memory contexts: palloc + pfree
 *   in an AllocSet against NativeMemory.Alloc + Free and
 *   ArrayPool<byte>.Shared Rent + Return; and Reset of a context holding
 *   100,000 chunks against freeing 100,000 native allocations one by one.
 *
 * NOTES
 *   Sizes come from a fixed table of 1024 pseudo-random sizes per range
 *   (Small: 16..256 B, Medium: 1..8 KiB), the same for every method. Two
 *   shapes: "Pair" frees each chunk right after taking it (the free list
 *   or tcache hit), "Batch" takes 1024 chunks and then frees them all (a
 *   tuple batch). Figures are per allocation + free (OperationsPerInvoke).
 *   The AllocSet is made once in [GlobalSetup]; after the first call its
 *   free lists hold every class the table needs, so the steady state is
 *   measured, as it would be in a backend. The ArrayPool returns arrays
 *   of 2^k bytes (managed, pooled per thread); it is there as the managed
 *   way .NET code avoids allocation, not as a like-for-like allocator.
 *
 *   Reset: [IterationSetup] fills the container with 100,000 chunks of
 *   64 B (outside the timing); the benchmark is one Reset, or 100,000
 *   NativeMemory.Free calls, or 100,000 pfree calls, or one Reset of a
 *   context created with retainOnReset (its ~16 MiB of blocks are kept for
 *   the next fill instead of going back to the OS). invocationCount 1, so
 *   BenchmarkDotNet warns that iterations are short; the figure is per
 *   100,000 chunks.
 *-------------------------------------------------------------------------
 */
using System.Buffers;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PgIpc.Memory;

namespace PgIpc.Perf.Memory;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public unsafe class MemoryContextBenchmarks
{
    private const int Ops = 1024;

    private AllocSetContext? _context;
    private int[] _sizes = [];
    private nint[] _ptrs = [];
    private byte[]?[] _arrays = [];

    [Params("Small", "Medium")]
    public string Range { get; set; } = "Small";

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(12345);
        (int lo, int hi) = Range == "Small" ? (16, 256) : (1024, 8192);
        _sizes = new int[Ops];
        for (int i = 0; i < Ops; i++)
            _sizes[i] = rng.Next(lo, hi + 1);
        _ptrs = new nint[Ops];
        _arrays = new byte[]?[Ops];
        _context = AllocSetContext.Create(null, "bench", debug: false);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _context?.Delete();
        _context = null;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Ops)]
    public void NativeAllocFreePair()
    {
        int[] sizes = _sizes;
        for (int i = 0; i < sizes.Length; i++)
        {
            void* p = NativeMemory.Alloc((nuint)sizes[i]);
            *(byte*)p = 1;
            NativeMemory.Free(p);
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void PallocPfreePair()
    {
        int[] sizes = _sizes;
        AllocSetContext c = _context!;
        for (int i = 0; i < sizes.Length; i++)
        {
            void* p = c.Alloc((nuint)sizes[i]);
            *(byte*)p = 1;
            MemoryContext.Free(p);
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void ArrayPoolRentReturnPair()
    {
        int[] sizes = _sizes;
        ArrayPool<byte> pool = ArrayPool<byte>.Shared;
        for (int i = 0; i < sizes.Length; i++)
        {
            byte[] a = pool.Rent(sizes[i]);
            a[0] = 1;
            pool.Return(a);
        }
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void NativeAllocFreeBatch()
    {
        int[] sizes = _sizes;
        nint[] ptrs = _ptrs;
        for (int i = 0; i < sizes.Length; i++)
        {
            ptrs[i] = (nint)NativeMemory.Alloc((nuint)sizes[i]);
            *(byte*)ptrs[i] = 1;
        }
        for (int i = 0; i < ptrs.Length; i++)
            NativeMemory.Free((void*)ptrs[i]);
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void PallocPfreeBatch()
    {
        int[] sizes = _sizes;
        nint[] ptrs = _ptrs;
        AllocSetContext c = _context!;
        for (int i = 0; i < sizes.Length; i++)
        {
            ptrs[i] = (nint)c.Alloc((nuint)sizes[i]);
            *(byte*)ptrs[i] = 1;
        }
        for (int i = 0; i < ptrs.Length; i++)
            MemoryContext.Free((void*)ptrs[i]);
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public void ArrayPoolRentReturnBatch()
    {
        int[] sizes = _sizes;
        byte[]?[] arrays = _arrays;
        ArrayPool<byte> pool = ArrayPool<byte>.Shared;
        for (int i = 0; i < sizes.Length; i++)
        {
            arrays[i] = pool.Rent(sizes[i]);
            arrays[i]![0] = 1;
        }
        for (int i = 0; i < arrays.Length; i++)
        {
            pool.Return(arrays[i]!);
            arrays[i] = null;
        }
    }
}

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 12, invocationCount: 1)]
public unsafe class MemoryContextResetBenchmarks
{
    private const int Chunks = 100_000;
    private const int ChunkSize = 64;

    private AllocSetContext? _context;
    private AllocSetContext? _retaining;
    private readonly nint[] _ptrs = new nint[Chunks];

    [GlobalSetup]
    public void Setup()
    {
        _context = AllocSetContext.Create(null, "bench.reset", debug: false);
        _retaining = AllocSetContext.Create(null, "bench.reset.retain", debug: false, retainOnReset: 64L << 20);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _context?.Delete();
        _context = null;
        _retaining?.Delete();
        _retaining = null;
    }

    [IterationSetup(Target = nameof(ResetContextRetaining))]
    public void FillRetaining()
    {
        _retaining!.Reset();
        for (int i = 0; i < Chunks; i++)
            _ptrs[i] = (nint)_retaining.Alloc(ChunkSize);
    }

    /// <summary>The same Reset on a context made with retainOnReset: 64 MiB (its blocks are kept for reuse).</summary>
    [Benchmark]
    public void ResetContextRetaining() => _retaining!.Reset();

    [IterationSetup(Targets = [nameof(ResetContext), nameof(PfreeEach)])]
    public void FillContext()
    {
        _context!.Reset();
        for (int i = 0; i < Chunks; i++)
            _ptrs[i] = (nint)_context.Alloc(ChunkSize);
    }

    [IterationSetup(Target = nameof(NativeFreeEach))]
    public void FillNative()
    {
        for (int i = 0; i < Chunks; i++)
            _ptrs[i] = (nint)NativeMemory.Alloc(ChunkSize);
    }

    /// <summary>100,000 NativeMemory.Free calls.</summary>
    [Benchmark(Baseline = true)]
    public void NativeFreeEach()
    {
        nint[] ptrs = _ptrs;
        for (int i = 0; i < ptrs.Length; i++)
            NativeMemory.Free((void*)ptrs[i]);
    }

    /// <summary>One MemoryContextReset of a context holding 100,000 chunks.</summary>
    [Benchmark]
    public void ResetContext() => _context!.Reset();

    /// <summary>100,000 pfree calls (chunks go to the free lists; the blocks stay).</summary>
    [Benchmark]
    public void PfreeEach()
    {
        nint[] ptrs = _ptrs;
        for (int i = 0; i < ptrs.Length; i++)
            MemoryContext.Free((void*)ptrs[i]);
    }
}
