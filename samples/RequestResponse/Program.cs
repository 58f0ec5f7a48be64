/*-------------------------------------------------------------------------
 * Program.cs (samples/RequestResponse)
 *   Two processes talking over shm_mq: the supervisor sends requests (a
 *   number) on one queue, a server process it started answers each on a
 *   second queue (the number squared), and the supervisor checks every
 *   answer. When the client detaches its sending end, the server's receive
 *   returns Detached and it exits.
 *
 * NOTES
 *   A shm_mq has one sender and one receiver: a request/response pair needs
 *   two queues, created by the supervisor in the main segment (ShmemModule
 *   .Struct with ShmMq.Create) and found by name by the server. Each side
 *   names itself (SetSender / SetReceiver) before attaching; a peer that
 *   dies is seen as Detached, never waited for forever. Exits 0 when all
 *   answers were right.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using PgIpc.Mq;
using PgIpc.Postmaster;
using PgIpc.Proc;

const int Requests = 1_000;
var requests = ShmemModule.Struct("rr.requests", ShmMq.SizeFor(4096), region => ShmMq.Create(region));
var responses = ShmemModule.Struct("rr.responses", ShmMq.SizeFor(4096), region => ShmMq.Create(region));

if (args is ["server"])
{
    using Cluster cluster = Cluster.Attach(null, requests, responses);
    using Participant me = cluster.JoinAsChild();
    ShmMq inQueue = ShmMq.Open(cluster.Get(requests));
    inQueue.SetReceiver(me);
    ShmMq outQueue = ShmMq.Open(cluster.Get(responses));
    outQueue.SetSender(me);
    using ShmMqHandle inbox = inQueue.AttachAsReceiver(me);
    using ShmMqHandle outbox = outQueue.AttachAsSender(me);
    Span<byte> answer = stackalloc byte[8];
    int served = 0;
    // Detached: the client is done (or died); either way there is nobody left to answer.
    while (inbox.Receive(out ReadOnlySpan<byte> request) == ShmMqResult.Success)
    {
        long n = BinaryPrimitives.ReadInt64LittleEndian(request);
        BinaryPrimitives.WriteInt64LittleEndian(answer, n * n);
        if (outbox.Send(answer) != ShmMqResult.Success)
            return 1;
        served++;
    }
    Console.WriteLine($"server {Environment.ProcessId}: served {served} requests, client detached");
    return 0;
}

using Supervisor supervisor = new ClusterBuilder($"sample-rr-{Environment.ProcessId}")
    .AddModule(requests).AddModule(responses).Build();
supervisor.Start();
using Participant client = supervisor.Cluster.Procs.Join();
ShmMq toServer = ShmMq.Open(supervisor.Cluster.Get(requests));
toServer.SetSender(client);
ShmMq fromServer = ShmMq.Open(supervisor.Cluster.Get(responses));
fromServer.SetReceiver(client);
BackgroundWorkerHandle server = supervisor.StartChild(ChildSpec.ForThisProgram("square server", "server", []));
int right = 0;
using (ShmMqHandle outbox = toServer.AttachAsSender(client))
using (ShmMqHandle inbox = fromServer.AttachAsReceiver(client))
{
    Span<byte> request = stackalloc byte[8];
    for (long n = 1; n <= Requests; n++)
    {
        BinaryPrimitives.WriteInt64LittleEndian(request, n);
        if (outbox.Send(request) != ShmMqResult.Success || inbox.Receive(out ReadOnlySpan<byte> answer) != ShmMqResult.Success)
        {
            Console.WriteLine($"request {n}: the server detached");
            break;
        }
        if (BinaryPrimitives.ReadInt64LittleEndian(answer) == n * n)
            right++;
    }
} // detaching the request queue's sending end tells the server to stop
server.WaitForShutdown(TimeSpan.FromSeconds(30));
Console.WriteLine($"client {Environment.ProcessId}: {right} of {Requests} answers right");
return right == Requests ? 0 : 1;
