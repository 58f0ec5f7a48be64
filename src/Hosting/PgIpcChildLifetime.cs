/*-------------------------------------------------------------------------
 * PgIpcChildLifetime.cs
 *   The child side: a hosted program started by a PgIpc supervisor (a
 *   background worker) stops its host when the supervisor asks it to stop
 *   or dies.
 *
 * NOTES
 *   The supervisor asks its children to stop by setting ShutdownRequested
 *   in the background-worker array (fast shutdown, crash stop) and setting
 *   every participant's latch; it dies without a word. A child's own loop
 *   sees both through its participant's WaitLatch (LatchSet,
 *   SupervisorDeath). This helper is for the host around that loop: it
 *   looks at the cluster's ShutdownRequested and at the supervisor's
 *   lifeline (ProcArray.IsSupervisorDead, the same watch SupervisorDeath
 *   waits on) every PollInterval, without taking a participant slot of
 *   its own, and calls IHostApplicationLifetime.StopApplication on the
 *   first of the two. The host then cancels its services' tokens, which
 *   the server's waits take (WaitLatch, shm_mq, ... with a token): the
 *   whole program winds down through the ordinary host shutdown.
 *
 *   The cluster is the container's Cluster when one is registered, else
 *   this helper attaches one (PgIpcChildOptions.Handle or PGIPC_CLUSTER)
 *   and registers it (AddPgIpcChild), so the program's services share it.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using PgIpc.Postmaster;

namespace PgIpc.Hosting;

/// <summary>Why <see cref="PgIpcChildLifetime"/> stopped the host.</summary>
public enum PgIpcChildStopReason
{
    /// <summary>It has not stopped the host.</summary>
    None,
    /// <summary>The supervisor asked its children to stop (a shutdown, or a crash of another child).</summary>
    StopRequested,
    /// <summary>The supervisor died.</summary>
    SupervisorDied,
}

/// <summary>
/// In a child of a PgIpc supervisor: stops the host (<see cref="IHostApplicationLifetime.StopApplication"/>) when the
/// supervisor asks its children to stop or dies. Registered by
/// <see cref="PgIpcHostingServiceCollectionExtensions.AddPgIpcChild(Microsoft.Extensions.DependencyInjection.IServiceCollection, Action{PgIpcChildOptions}?)"/>.
/// </summary>
public sealed partial class PgIpcChildLifetime : BackgroundService
{
    private readonly Cluster _cluster;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly TimeSpan _poll;
    private readonly ILogger _logger;
    private int _reason;

    /// <param name="cluster">The cluster this child is attached to.</param>
    /// <param name="lifetime">The host's lifetime, stopped on the supervisor's request or death.</param>
    /// <param name="options">The poll interval.</param>
    /// <param name="logger">Where the stop is logged.</param>
    public PgIpcChildLifetime(Cluster cluster, IHostApplicationLifetime lifetime, IOptions<PgIpcChildOptions> options,
        ILogger<PgIpcChildLifetime>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(lifetime);
        ArgumentNullException.ThrowIfNull(options);
        _cluster = cluster;
        _lifetime = lifetime;
        _poll = options.Value.PollInterval;
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_poll, TimeSpan.Zero, nameof(options));
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>Why the helper stopped the host, or <see cref="PgIpcChildStopReason.None"/>.</summary>
    public PgIpcChildStopReason StopReason => (PgIpcChildStopReason)Volatile.Read(ref _reason);

    /// <summary>Watches the cluster until the host stops, or stops it.</summary>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_poll);
        try
        {
            do
            {
                PgIpcChildStopReason reason = Check();
                if (reason != PgIpcChildStopReason.None)
                {
                    Volatile.Write(ref _reason, (int)reason);
                    if (reason == PgIpcChildStopReason.SupervisorDied)
                        LogSupervisorDied(_logger, _cluster.SupervisorPid);
                    else
                        LogStopRequested(_logger, _cluster.SupervisorPid);
                    _lifetime.StopApplication();
                    return;
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // The host is stopping for another reason.
        }
    }

    private PgIpcChildStopReason Check()
    {
        if (!_cluster.IsAttached)
            return PgIpcChildStopReason.SupervisorDied; // detached under us: nothing left to serve
        if (_cluster.ShutdownRequested)
            return PgIpcChildStopReason.StopRequested;
        return _cluster.Procs.IsSupervisorDead ? PgIpcChildStopReason.SupervisorDied : PgIpcChildStopReason.None;
    }

    [LoggerMessage(2001, LogLevel.Information, "the PgIpc supervisor (PID {SupervisorPid}) asked this child to stop; stopping the host")]
    private static partial void LogStopRequested(ILogger logger, int supervisorPid);

    [LoggerMessage(2002, LogLevel.Warning, "the PgIpc supervisor (PID {SupervisorPid}) died; stopping the host")]
    private static partial void LogSupervisorDied(ILogger logger, int supervisorPid);
}
