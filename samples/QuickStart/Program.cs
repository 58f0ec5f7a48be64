// One program, two processes: run plainly, it creates the cluster's shared memory and starts itself again as "child".
// Both add to a counter under a named LWLock; the child then sends the parent a message over a shm_mq.
using System.Text;
using PgIpc.Mq;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

var counter = ShmemModule.Struct("quickstart.counter", sizeof(long));
var queue = ShmemModule.Struct("quickstart.queue", ShmMq.SizeFor(4096), region => ShmMq.Create(region));

if (args is ["child"])
{
    using Cluster cluster = Cluster.Attach(null, counter, queue); // the supervisor passes the handle
    using Participant me = cluster.JoinAsChild();
    AddToCounter(cluster, me, cluster.Get(counter));
    ShmMq mq = ShmMq.Open(cluster.Get(queue));
    mq.SetSender(me);
    using ShmMqHandle outbox = mq.AttachAsSender(me);
    outbox.Send(Encoding.UTF8.GetBytes($"hello from child {Environment.ProcessId}"));
    return 0;
}

using Supervisor supervisor = new ClusterBuilder($"quickstart-{Environment.ProcessId}")
    .AddModule(counter).AddModule(queue).RequestNamedLWLockTranche("quickstart.lock", 1).Build();
supervisor.Start();
Cluster shared = supervisor.Cluster;
using Participant leader = shared.Procs.Join();
ShmMq inbound = ShmMq.Open(shared.Get(queue));
inbound.SetReceiver(leader);
using ShmMqHandle inbox = inbound.AttachAsReceiver(leader);
BackgroundWorkerHandle child = supervisor.StartChild(ChildSpec.ForThisProgram("child", "child", []));
AddToCounter(shared, leader, shared.Get(counter));
if (inbox.Receive(out ReadOnlySpan<byte> message) == ShmMqResult.Success)
    Console.WriteLine($"parent {Environment.ProcessId} received: {Encoding.UTF8.GetString(message)}");
child.WaitForShutdown(TimeSpan.FromSeconds(30));
long total = shared.Get(counter).AsSpan<long>()[0];
Console.WriteLine($"counter: {total} (expected 2000)");
return total == 2000 ? 0 : 1; // the queue handle, then the participant, then the supervisor (a fast shutdown) are disposed

static void AddToCounter(Cluster cluster, Participant me, ShmemRegion counter)
{
    ref LWLock counterLock = ref LWLockTranches.GetNamedLWLockTranche(cluster.Segment, "quickstart.lock")[0];
    for (int i = 0; i < 1000; i++)
        using (counterLock.Hold(me, LWLockMode.Exclusive))
            counter.AsSpan<long>()[0]++;
}
