/*-------------------------------------------------------------------------
 * Demo.cs
 *   pgipc demo: a cluster segment, two child processes exchanging data
 *   through a named struct, the allocation table, and a clean teardown.
 *
 * NOTES
 *   The supervisor side creates the segment sized by a ShmemSizeBuilder,
 *   initialises "demo.exchange" through ShmemInitStruct, and starts this
 *   same executable twice (exec, not fork) with the segment's handle on the
 *   command line. The producer child hands the numbers 1..N to the consumer
 *   child one at a time through a one-slot mailbox (publish the value, then
 *   release-store the turn flag; the reader acquire-loads the flag before
 *   reading the value). The consumer sums them; the supervisor checks the
 *   sum, prints the allocation table, destroys the segment and shows that
 *   no OS object is left. Latches (a later issue) will replace the spinning.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Cli;

/// <summary>
/// The demo's mailbox in shared memory.
/// Turn: atomic; 0 = the producer may write, 1 = the consumer may read. The producer writes Value then
/// release-stores Turn = 1; the consumer acquire-loads Turn, reads Value, release-stores Turn = 0.
/// Value: owned by whichever side Turn names. Rounds: immutable after initialisation.
/// ProducerPid, ConsumerPid: written once by each child. Sum, Done: written by the consumer, Sum before the
/// release store of Done (the supervisor acquire-loads Done).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DemoExchange
{
    public long Turn;
    public long Value;
    public long Rounds;
    public long ProducerPid;
    public long ConsumerPid;
    public long Sum;
    public long Done;
}

internal static class Demo
{
    public const string ChildVerb = "demo-child";
    private const string StructName = "demo.exchange";

    public static unsafe int Run(string[] args)
    {
        IPgIpcPlatform platform = Program.Platform(args);
        long rounds = long.Parse(Program.Option(args, "--rounds") ?? "20000");
        if (rounds < 1)
            throw new ArgumentException("--rounds must be at least 1");

        int before = platform.SharedMemory.EnumerateCandidates().Count();
        Console.WriteLine($"backend      {platform.Name}");
        Console.WriteLine($"os objects   {before} PgIpc segment(s) before");

        ShmemSizeBuilder sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(StructName, sizeof(DemoExchange));
        string key = $"pgipc-demo-{Environment.ProcessId}";
        long expected = rounds * (rounds + 1) / 2;
        bool ok;
        using (ShmemSegment seg = ShmemSegment.Create(key, sizes, platform))
        {
            Console.WriteLine($"segment      {seg.Handle.Id}, {seg.TotalSize} bytes");
            Console.WriteLine($"handle       {seg.Handle}");
            seg.InitStruct(StructName, sizeof(DemoExchange), r => r.As<DemoExchange>().Rounds = rounds, out _);

            var sw = Stopwatch.StartNew();
            using Process consumer = StartChild("consumer", seg.Handle, platform);
            using Process producer = StartChild("producer", seg.Handle, platform);
            bool exited = producer.WaitForExit(120_000) & consumer.WaitForExit(120_000);
            sw.Stop();
            if (!exited)
            {
                KillQuietly(producer);
                KillQuietly(consumer);
                seg.Destroy();
                throw new PgIpcException("demo children did not finish within 120 s; killed");
            }

            ref DemoExchange ex = ref seg.InitStruct<DemoExchange>(StructName, out bool found);
            bool done = Volatile.Read(ref ex.Done) == 1; // acquire; pairs with the consumer's release store
            ok = found && done && ex.Sum == expected && producer.ExitCode == 0 && consumer.ExitCode == 0;
            Console.WriteLine($"children     producer pid {ex.ProducerPid} (exit {producer.ExitCode}), consumer pid {ex.ConsumerPid} (exit {consumer.ExitCode})");
            Console.WriteLine($"exchange     {rounds} values handed over in {sw.Elapsed.TotalMilliseconds:F0} ms; sum {ex.Sum}, expected {expected}: {(ok ? "OK" : "WRONG")}");
            Console.WriteLine();
            Inspect.PrintAllocations(seg, Console.Out);
            Console.WriteLine();
            seg.Destroy();
        }

        int after = platform.SharedMemory.EnumerateCandidates().Count();
        Console.WriteLine($"shut down    segment destroyed; {after} PgIpc segment(s) left (before: {before})");
        return ok && after <= before ? 0 : 1;
    }

    private static Process StartChild(string role, ShmemHandle handle, IPgIpcPlatform platform)
    {
        string exe = Environment.ProcessPath ?? throw new PgIpcException("cannot find this executable to start the demo children");
        var psi = new ProcessStartInfo { FileName = exe, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(exe).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            psi.ArgumentList.Add(typeof(Demo).Assembly.Location);
        psi.ArgumentList.Add(ChildVerb);
        psi.ArgumentList.Add(role);
        psi.ArgumentList.Add(handle.ToString());
        return Process.Start(psi) ?? throw new PgIpcException($"could not start the {role} child");
    }

    private static void KillQuietly(Process p)
    {
        try { if (!p.HasExited) p.Kill(); } catch (InvalidOperationException) { }
    }

    /// <summary>Child side: attach by handle, play producer or consumer, detach.</summary>
    public static unsafe int RunChild(string[] args)
    {
        if (args.Length != 2)
            throw new ArgumentException("usage: pgipc demo-child producer|consumer <handle>");
        using ShmemSegment seg = ShmemSegment.Attach(args[1]);
        ref DemoExchange ex = ref seg.InitStruct<DemoExchange>(StructName, out bool found);
        if (!found)
            throw new PgIpcException($"{StructName} was not initialised by the supervisor");
        long rounds = ex.Rounds;
        if (args[0] == "producer")
        {
            ex.ProducerPid = Environment.ProcessId;
            for (long i = 1; i <= rounds; i++)
            {
                WaitFor(ref ex.Turn, 0);
                ex.Value = i;
                Volatile.Write(ref ex.Turn, 1); // release: Value is visible before the turn passes
            }
        }
        else if (args[0] == "consumer")
        {
            ex.ConsumerPid = Environment.ProcessId;
            long sum = 0;
            for (long i = 1; i <= rounds; i++)
            {
                WaitFor(ref ex.Turn, 1);
                sum += ex.Value;
                Volatile.Write(ref ex.Turn, 0); // release: hands the slot back
            }
            ex.Sum = sum;
            Volatile.Write(ref ex.Done, 1); // release; pairs with the supervisor's acquire load
        }
        else
        {
            throw new ArgumentException($"unknown demo role \"{args[0]}\"");
        }
        return 0;
    }

    private static void WaitFor(ref long word, long value)
    {
        var spinner = new SpinWait();
        // Acquire; pairs with the other side's release store of the turn.
        while (Volatile.Read(ref word) != value)
            spinner.SpinOnce(sleep1Threshold: -1);
    }
}
