/*-------------------------------------------------------------------------
 * BindingAbHarness.cs
 *   Side by side, in one process: the Linux backend's former hand-written
 *   [LibraryImport] bindings against Tmds.LibC's [DllImport]s, for the
 *   calls on hot paths: futex(FUTEX_WAKE) (LWLock wake-up), write(2) of 1
 *   to an eventfd (SetLatch of a sleeping owner) and epoll_wait with a zero
 *   timeout (WaitLatch).
 *
 * NOTES
 *   dotnet run -c Release --project perf -- bindings [--blocks 200] [--calls 2000]
 *
 *   Each call is a real system call that does not sleep: FUTEX_WAKE on a
 *   word nobody waits on, a write to a non-blocking eventfd (read back
 *   every block so it never saturates), epoll_wait on a set whose only fd
 *   is not ready. The two bindings run in alternating blocks of --calls
 *   calls (which goes first alternates too), --blocks times; the figure is
 *   the median ns per call of each, and the median of the per-pair ratios
 *   (Tmds / ours). A loaded machine moves both alike from block to block,
 *   so the paired ratio is what to read. Both bindings set errno the same
 *   way (SetLastError), and our own errno check is not in the loop.
 *
 *   The "ours" declarations are the ones src/Platform.Linux had before it
 *   moved to Tmds.LibC (main at 2bad75b), kept here only to measure them.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using TmdsLibC = Tmds.Linux.LibC;

namespace PgIpc.Perf.Platform;

internal static unsafe partial class BindingAbHarness
{
    public const string Verb = "bindings";

    private static partial class Ours
    {
        [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
        public static partial long syscall(long number, int* uaddr, int futex_op, int val, void* timeout, int* uaddr2, int val3);

        [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
        public static partial nint write(int fd, void* buf, nuint count);

        [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
        public static partial nint read(int fd, void* buf, nuint count);

        [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
        public static partial int epoll_wait(int epfd, void* events, int maxevents, int timeout);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        public static partial int close(int fd);
    }

    private const int FutexWake = 1;

    public static int Run(string[] args)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            Console.Error.WriteLine("bindings: Linux x86_64 only (SYS_futex 202)");
            return 1;
        }
        int blocks = 200, calls = 2000;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (args[i] == "--blocks")
                blocks = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
            else if (args[i] == "--calls")
                calls = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
        }
        int* word = (int*)NativeMemory.AlignedAlloc(64, 64);
        *word = 0;
        int efd = TmdsLibC.eventfd(0, TmdsLibC.EFD_NONBLOCK | TmdsLibC.EFD_CLOEXEC);
        int quiet = TmdsLibC.eventfd(0, TmdsLibC.EFD_NONBLOCK | TmdsLibC.EFD_CLOEXEC);
        int ep = TmdsLibC.epoll_create1(TmdsLibC.EPOLL_CLOEXEC);
        var reg = new Tmds.Linux.epoll_event { events = TmdsLibC.EPOLLIN };
        if (efd < 0 || quiet < 0 || ep < 0 || TmdsLibC.epoll_ctl(ep, TmdsLibC.EPOLL_CTL_ADD, quiet, &reg) != 0)
        {
            Console.Error.WriteLine($"bindings: set-up failed, errno {Marshal.GetLastPInvokeError()}");
            return 1;
        }
        byte* events = (byte*)NativeMemory.AlignedAlloc(64, 64);
        ulong* one = (ulong*)NativeMemory.AlignedAlloc(16, 16);
        ulong* sink = one + 1;
        *one = 1;
        Console.WriteLine($"bindings: {blocks} blocks of {calls} calls per binding, alternating; {DateTime.UtcNow:HH:mm:ss} UTC, load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("call                       ours ns/call   Tmds ns/call   Tmds/ours (median of pairs)");
        try
        {
            Report("futex(FUTEX_WAKE)", blocks, calls,
                n => { for (int i = 0; i < n; i++) Ours.syscall(202, word, FutexWake, 1, null, null, 0); },
                n => { for (int i = 0; i < n; i++) TmdsLibC.syscall(202, word, FutexWake, 1, (void*)null); });
            Report("write(eventfd, 8)", blocks, calls,
                n => { for (int i = 0; i < n; i++) Ours.write(efd, one, sizeof(ulong)); Ours.read(efd, sink, sizeof(ulong)); },
                n => { for (int i = 0; i < n; i++) TmdsLibC.write(efd, one, sizeof(ulong)); Ours.read(efd, sink, sizeof(ulong)); });
            Report("epoll_wait(0 ms, empty)", blocks, calls,
                n => { for (int i = 0; i < n; i++) Ours.epoll_wait(ep, events, 4, 0); },
                n => { for (int i = 0; i < n; i++) TmdsLibC.epoll_wait(ep, (Tmds.Linux.epoll_event*)events, 4, 0); });
        }
        finally
        {
            Ours.close(ep);
            Ours.close(quiet);
            Ours.close(efd);
            NativeMemory.AlignedFree(word);
            NativeMemory.AlignedFree(events);
            NativeMemory.AlignedFree(one);
        }
        return 0;
    }

    private static void Report(string name, int blocks, int calls, Action<int> ours, Action<int> tmds)
    {
        ours(calls); // warm both up (JIT, IL stubs, library resolution)
        tmds(calls);
        var a = new double[blocks];
        var b = new double[blocks];
        var r = new double[blocks];
        for (int k = 0; k < blocks; k++)
        {
            bool oursFirst = (k & 1) == 0;
            double first = Time(oursFirst ? ours : tmds, calls);
            double second = Time(oursFirst ? tmds : ours, calls);
            a[k] = oursFirst ? first : second;
            b[k] = oursFirst ? second : first;
            r[k] = b[k] / a[k];
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name,-26} {Median(a),12:F1}   {Median(b),12:F1}   {Median(r),8:F3}"));
    }

    private static double Time(Action<int> body, int calls)
    {
        long t0 = Stopwatch.GetTimestamp();
        body(calls);
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / calls;
    }

    private static double Median(double[] v)
    {
        double[] s = (double[])v.Clone();
        Array.Sort(s);
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
