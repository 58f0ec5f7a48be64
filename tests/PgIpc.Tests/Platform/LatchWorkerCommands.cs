/*-------------------------------------------------------------------------
 * LatchWorkerCommands.cs
 *   The worker process's commands for the wait-event contract tests
 *   (WaitEventContractTests): latch wakers, owners and waits, the
 *   supervisor lifeline, interrupts.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     latch-attach <name> <struct> <count> [<variant>] -> ok  (Attach the latch set <name> whose storage is
 *                                         the structure <struct>, stride LatchStorage.MaxSize; <variant> as
 *                                         the test fixture's: linux-signal, posix-select, or a backend name)
 *     latch-own <i>                    -> ok               (Own slot i; a wait set watches it)
 *     latch-own-range <from> <n>       -> ok               (Own slots from..from+n-1, kept, in no wait set)
 *     latch-wait <ms>                  -> ok set | ok timeout
 *     latch-wake <i>                   -> ok
 *     latch-wake-many <i> <n>          -> ok <bytes>       (n Wakes of slot i to warm up, then n more; the
 *                                                          bytes this thread allocated during the second n)
 *     latch-pingpong <n> <mine> <theirs> -> ok             (n rounds: wait up to 10 s for slot <mine>, then
 *                                                          wake slot <theirs>; error on a 10 s wait)
 *     latch-disown                     -> ok               (dispose the owner and its wait set)
 *     latch-detach                     -> ok               (dispose the wakers)
 *     lifeline <name>                  -> ok               (CreateLifeline, kept until the process dies)
 *     interrupt-listen <name>          -> ok               (ListenForInterrupts, counting calls)
 *     interrupt-count                  -> ok <calls so far>
 *   The backend is the worker's "--backend" argument, read from the command line.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Platform;

internal static class LatchWorkerCommands
{
    private static ILatchWakers? s_wakers;
    private static ILatchOwner? s_owner;
    private static IPlatformWaitSet? s_set;
    private static readonly List<IDisposable> s_keep = [];
    private static int s_interrupts;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "ok";
        switch (a[0])
        {
            case "latch-attach":
            {
                ShmemSegment s = seg ?? throw new InvalidOperationException("worker is not attached");
                if (!s.TryFindStruct(a[2], out ShmemRegion r))
                    throw new ArgumentException($"no shared structure \"{a[2]}\"");
                ILatchProvider provider = WaitEventContractTests.Provider(a.Length > 4 ? a[4] : Backend());
                s_wakers?.Dispose();
                unsafe
                {
                    s_wakers = provider.Attach(a[1], (nint)r.Pointer, LatchStorage.MaxSize, Int(a[3]));
                }
                s_set?.Dispose();
                s_set = provider.CreateWaitSet(4);
                return true;
            }
            case "latch-own":
                s_owner = Wakers().Own(Int(a[1]));
                Set().AddLatch(s_owner);
                return true;
            case "latch-own-range":
            {
                int from = Int(a[1]), n = Int(a[2]);
                for (int i = from; i < from + n; i++)
                    s_keep.Add(Wakers().Own(i));
                return true;
            }
            case "latch-wait":
            {
                Span<WaitEvent> occurred = new WaitEvent[4];
                int n = Set().Wait(Int(a[1]), occurred);
                reply = n > 0 && occurred[0].Events == WaitEvents.LatchSet ? "ok set" : n == 0 ? "ok timeout" : $"ok {occurred[0].Events}";
                return true;
            }
            case "latch-wake":
                Wakers().Wake(Int(a[1]));
                return true;
            case "latch-wake-many":
            {
                ILatchWakers wakers = Wakers();
                int index = Int(a[1]), n = Int(a[2]);
                WakeMany(wakers, index, n); // the first wake of an owner may allocate, and so may the JIT
                reply = $"ok {WakeMany(wakers, index, n)}";
                return true;
            }
            case "latch-pingpong":
            {
                int rounds = Int(a[1]), theirs = Int(a[3]);
                ILatchWakers wakers = Wakers();
                IPlatformWaitSet set = Set();
                Span<WaitEvent> occurred = new WaitEvent[4];
                for (int i = 0; i < rounds; i++)
                {
                    if (set.Wait(10_000, occurred) == 0)
                        throw new TimeoutException($"round {i} of {rounds}: slot {a[2]} was not woken within 10 s");
                    wakers.Wake(theirs);
                }
                return true;
            }
            case "latch-disown":
                s_owner?.Dispose();
                s_owner = null;
                return true;
            case "latch-detach":
                s_set?.Dispose();
                s_set = null;
                s_owner = null;
                s_wakers?.Dispose();
                s_wakers = null;
                return true;
            case "lifeline":
                s_keep.Add(WaitEventContractTests.Provider(Backend()).CreateLifeline(a[1]));
                return true;
            case "interrupt-listen":
                s_keep.Add(WaitEventContractTests.Provider(Backend()).ListenForInterrupts(a[1], () => Interlocked.Increment(ref s_interrupts)));
                return true;
            case "interrupt-count":
                reply = $"ok {Volatile.Read(ref s_interrupts)}";
                return true;
            default:
                return false;
        }
    }

    /// <summary>n Wakes of slot <paramref name="index"/>; returns the bytes this thread allocated meanwhile.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static long WakeMany(ILatchWakers wakers, int index, int n)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < n; i++)
            wakers.Wake(index);
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    private static ILatchWakers Wakers() => s_wakers ?? throw new InvalidOperationException("worker has no latch set (latch-attach first)");

    private static IPlatformWaitSet Set() => s_set ?? throw new InvalidOperationException("worker has no wait set (latch-attach first)");

    /// <summary>The worker's "--backend" argument.</summary>
    private static string Backend()
    {
        string[] args = Environment.GetCommandLineArgs();
        for (int i = 0; i + 1 < args.Length; i++)
            if (args[i] == "--backend")
                return args[i + 1];
        return PgIpcPlatform.Current.Name;
    }

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}
