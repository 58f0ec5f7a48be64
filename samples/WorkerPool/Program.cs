/*-------------------------------------------------------------------------
 * Program.cs (samples/WorkerPool)
 *   A pool of worker processes that survives one of them crashing: the
 *   supervisor registers three permanent background workers; worker 0
 *   dies abruptly once (it kills itself, as a segfault or the OOM killer
 *   would), the supervisor does a crash restart (stops the others, throws
 *   shared memory away, builds it again, starts every worker again) and
 *   the pool carries on working.
 *
 * NOTES
 *   A crash is any exit a worker cannot have chosen cleanly (killed by a
 *   signal, an exit code other than 0 or 1): it may have died inside a
 *   critical section, so nothing in shared memory can be trusted, exactly
 *   as PostgreSQL's postmaster reasons. The workers' counters live in
 *   shared memory, so they start again from zero in the new incarnation;
 *   the supervisor reads them through ReadShared, which keeps a crash
 *   restart from unmapping the segment under it. Worker 0 crashes only
 *   while a marker file exists (it deletes it first), so the restarted
 *   worker 0 works normally. Exits 0 when there was exactly one crash
 *   restart and every worker did work after it.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using PgIpc.Postmaster;
using PgIpc.Proc;

const int Workers = 3;
var counters = ShmemModule.Struct("pool.counters", Workers * sizeof(long), region => region.AsSpan<long>().Clear());

if (args is ["worker", var indexText, var crashMarker])
{
    int index = int.Parse(indexText);
    using Cluster cluster = Cluster.Attach(null, counters);
    using Participant me = cluster.JoinAsChild();
    Span<long> mine = cluster.Get(counters).AsSpan<long>().Slice(index, 1);
    var sw = Stopwatch.StartNew();
    while (!cluster.ShutdownRequested)
    {
        if (cluster.ImmediateStopRequested)
            return 2; // a crash stop: leave at once, shared memory is being thrown away
        Volatile.Write(ref mine[0], mine[0] + 1); // release; pairs with the supervisor's acquire read
        Thread.Sleep(5);
        if (index == 0 && sw.ElapsedMilliseconds > 500 && File.Exists(crashMarker))
        {
            File.Delete(crashMarker);
            Console.WriteLine($"worker 0 (pid {Environment.ProcessId}): crashing");
            Process.GetCurrentProcess().Kill(); // SIGKILL on Unix, TerminateProcess on Windows
        }
    }
    return 0;
}

string marker = Path.Combine(Directory.CreateTempSubdirectory("pgipc-pool-").FullName, "crash-once");
File.WriteAllText(marker, "worker 0 crashes while this file exists");
ClusterBuilder builder = new ClusterBuilder($"sample-pool-{Environment.ProcessId}").AddModule(counters);
for (int i = 0; i < Workers; i++)
    builder.AddBackgroundWorker(ChildSpec.ForThisProgram($"pool worker {i}", "worker", [i.ToString(), marker], restartIntervalMs: 0));
bool ok;
using (Supervisor supervisor = builder.Build())
{
    supervisor.Start();
    var sw = Stopwatch.StartNew();
    while (supervisor.CrashRestarts == 0 && sw.Elapsed < TimeSpan.FromSeconds(30))
        Thread.Sleep(50);
    Console.WriteLine($"supervisor: {supervisor.CrashRestarts} crash restart(s), incarnation {supervisor.Incarnation}");
    bool AllBusy() => supervisor.ReadShared(c =>
    {
        Span<long> ops = c.Get(counters).AsSpan<long>();
        for (int i = 0; i < Workers; i++)
            if (Volatile.Read(ref ops[i]) == 0) // acquire; pairs with the worker's release write
                return false;
        return true;
    });
    while (!AllBusy() && sw.Elapsed < TimeSpan.FromSeconds(60))
        Thread.Sleep(50);
    string counts = supervisor.ReadShared(c => string.Join(", ", c.Get(counters).AsSpan<long>().ToArray()));
    Console.WriteLine($"supervisor: after the restart every worker works again: {AllBusy()} (counts {counts})");
    ok = supervisor.CrashRestarts == 1 && AllBusy();
    ok &= supervisor.Shutdown(ShutdownMode.Fast, TimeSpan.FromSeconds(20));
}
Directory.Delete(Path.GetDirectoryName(marker)!, recursive: true);
Console.WriteLine(ok ? "the pool survived its crashing worker" : "FAILED");
return ok ? 0 : 1;
