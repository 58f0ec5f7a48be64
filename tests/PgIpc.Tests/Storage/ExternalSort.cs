/*-------------------------------------------------------------------------
 * ExternalSort.cs
 *   A sample work_mem consumer: tuplesort.c's shape reduced to its spill
 *   decision. Tuples are copied into a memory context; when the context
 *   holds more than the budget (work_mem), the tuples in memory are sorted
 *   and written as a run to a BufFile and the context is reset; at the
 *   end the runs are merged (k-way, one tuple per run in memory), or, when
 *   nothing spilled, the tuples are sorted in memory (tuplesort's
 *   TSS_INITIAL -> TSS_SORTEDINMEM vs TSS_BUILDRUNS -> TSS_FINALMERGE).
 *
 *   A run is the tuples in order, each as a 4-byte length and its bytes.
 *   Order: bytewise (ReadOnlySpan.SequenceCompareTo).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Memory;
using PgIpc.Storage;

namespace PgIpc.Tests.Storage;

internal sealed unsafe class ExternalSort : IDisposable
{
    private readonly MemoryContext _context;
    private readonly MemoryBudget _budget;
    private readonly TempFileSpace _space;
    private readonly List<nint> _tuples = []; // each: int length, then the bytes, in _context
    private readonly List<BufFile> _runs = [];

    public ExternalSort(MemoryBudget budget, TempFileSpace space)
    {
        _budget = budget;
        _space = space;
        _context = AllocSetContext.Create(null, "ExternalSort");
    }

    /// <summary>Runs written to temporary files so far.</summary>
    public int Runs => _runs.Count;

    /// <summary>The most the context held (it passes the budget by one block at most before a run is written).</summary>
    public long PeakMemory { get; private set; }

    public void Put(ReadOnlySpan<byte> tuple)
    {
        byte* p = (byte*)_context.Alloc((nuint)(4 + tuple.Length));
        *(int*)p = tuple.Length;
        tuple.CopyTo(new Span<byte>(p + 4, tuple.Length));
        _tuples.Add((nint)p);
        PeakMemory = Math.Max(PeakMemory, _context.MemAllocated(recurse: true));
        if (_budget.IsExceededBy(_context)) // LACKMEM(): spill what is in memory as a sorted run
            DumpRun();
    }

    private static ReadOnlySpan<byte> TupleAt(nint p) => new((byte*)p + 4, *(int*)p);

    private void SortInMemory() => _tuples.Sort((a, b) => TupleAt(a).SequenceCompareTo(TupleAt(b)));

    private void DumpRun()
    {
        SortInMemory();
        BufFile run = BufFile.CreateTemp(_space);
        _runs.Add(run);
        foreach (nint t in _tuples)
            run.Write(new ReadOnlySpan<byte>((byte*)t, 4 + *(int*)t));
        run.Flush();
        _tuples.Clear();
        _context.Reset();
    }

    private static byte[]? ReadTuple(BufFile run)
    {
        Span<byte> len = stackalloc byte[4];
        if (run.Read(len) == 0)
            return null;
        var tuple = new byte[MemoryMarshal.Read<int>(len)];
        run.ReadExactly(tuple);
        return tuple;
    }

    /// <summary>performsort + gettuple: every tuple, in order.</summary>
    public IEnumerable<byte[]> Sorted()
    {
        if (_runs.Count == 0)
        {
            SortInMemory();
            foreach (nint t in _tuples)
                yield return TupleAt(t).ToArray();
            yield break;
        }
        if (_tuples.Count > 0)
            DumpRun();
        var heap = new PriorityQueue<(byte[] Tuple, int Run), byte[]>(Comparer<byte[]>.Create((a, b) => a.AsSpan().SequenceCompareTo(b)));
        for (int r = 0; r < _runs.Count; r++)
        {
            _runs[r].Seek(0);
            if (ReadTuple(_runs[r]) is { } first)
                heap.Enqueue((first, r), first);
        }
        while (heap.TryDequeue(out (byte[] Tuple, int Run) top, out _))
        {
            yield return top.Tuple;
            if (ReadTuple(_runs[top.Run]) is { } next)
                heap.Enqueue((next, top.Run), next);
        }
    }

    public void Dispose()
    {
        foreach (BufFile r in _runs)
            r.Dispose();
        _runs.Clear();
        _context.Delete();
    }
}
