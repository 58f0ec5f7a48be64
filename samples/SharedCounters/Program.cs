/*-------------------------------------------------------------------------
 * Program.cs (samples/SharedCounters)
 *   A table of counters in shared memory, each guarded by its own LWLock of
 *   a named tranche: the supervisor starts three worker processes, each
 *   adds 1 to every counter 2,000 times under that counter's lock, and the
 *   supervisor checks that no increment was lost.
 *
 * NOTES
 *   The table is a user structure (ShmemModule.Struct) and the locks are a
 *   named tranche (RequestNamedLWLockTranche), as an extension would ask
 *   for them in shmem_request_hook: the supervisor creates both before any
 *   child starts; a child finds both by name. Exits 0 when every counter
 *   holds workers x rounds.
 *-------------------------------------------------------------------------
 */
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

const int Counters = 16, Workers = 3, Rounds = 2_000;
const string Tranche = "counters.locks";
var table = ShmemModule.Struct("counters.table", Counters * sizeof(long), region => region.AsSpan<long>().Clear());

if (args is ["worker", var index])
{
    using Cluster cluster = Cluster.Attach(null, table); // the supervisor passes the handle in the environment
    using Participant me = cluster.JoinAsChild();
    Span<long> counters = cluster.Get(table).AsSpan<long>();
    LWLockArray locks = LWLockTranches.GetNamedLWLockTranche(cluster.Segment, Tranche);
    for (int round = 0; round < Rounds; round++)
    {
        for (int i = 0; i < Counters; i++)
        {
            // Each worker starts at a different counter, so the workers meet on every lock.
            int c = (i + int.Parse(index)) % Counters;
            using (locks[c].Hold(me, LWLockMode.Exclusive))
                counters[c]++;
        }
    }
    return 0;
}

using Supervisor supervisor = new ClusterBuilder($"sample-counters-{Environment.ProcessId}")
    .AddModule(table)
    .RequestNamedLWLockTranche(Tranche, Counters)
    .Build();
supervisor.Start();
var workers = new List<BackgroundWorkerHandle>();
for (int w = 0; w < Workers; w++)
    workers.Add(supervisor.StartChild(ChildSpec.ForThisProgram($"counter worker {w}", "worker", [w.ToString()])));
foreach (BackgroundWorkerHandle h in workers)
    h.WaitForShutdown(TimeSpan.FromSeconds(60));

Span<long> result = supervisor.Cluster.Get(table).AsSpan<long>();
long expected = (long)Workers * Rounds;
bool ok = true;
for (int i = 0; i < Counters; i++)
{
    Console.WriteLine($"counter {i,2}: {result[i]}{(result[i] == expected ? "" : $" WRONG, expected {expected}")}");
    ok &= result[i] == expected;
}
Console.WriteLine(ok ? $"{Workers} processes x {Rounds} rounds under tranche \"{Tranche}\": no increment lost" : "increments were lost");
return ok ? 0 : 1;
