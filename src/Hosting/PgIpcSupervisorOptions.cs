/*-------------------------------------------------------------------------
 * PgIpcSupervisorOptions.cs
 *   The options of a supervisor run by the host (PgIpcSupervisorService),
 *   and of the child-side lifetime helper (PgIpcChildLifetime).
 *
 * NOTES
 *   The options pattern: services.AddPgIpcSupervisor(...) or
 *   services.Configure<PgIpcSupervisorOptions>(...) fill these; the service
 *   reads them once, when the host starts it. What the cluster looks like
 *   (buffer pool, workers, tranches, modules) is ClusterBuilder's business:
 *   ConfigureCluster receives the builder.
 *-------------------------------------------------------------------------
 */
using PgIpc.Postmaster;

namespace PgIpc.Hosting;

/// <summary>Options of the supervisor that <see cref="PgIpcSupervisorService"/> runs with the host.</summary>
public sealed class PgIpcSupervisorOptions
{
    /// <summary>The cluster key (required): names the cluster's shared memory (see <see cref="ClusterBuilder(string)"/>).</summary>
    public string? Key { get; set; }

    /// <summary>Configures the cluster before it is built: backend, buffer pool, workers, tranches, modules.</summary>
    public Action<ClusterBuilder>? ConfigureCluster { get; set; }

    /// <summary>How the supervisor stops its children when the host stops. Default <see cref="ShutdownMode.Fast"/>.</summary>
    public ShutdownMode ShutdownMode { get; set; } = ShutdownMode.Fast;

    /// <summary>
    /// How long children get to exit when the host stops before they are killed. Default
    /// <see cref="Timeout.InfiniteTimeSpan"/>: until the host's own shutdown timeout (HostOptions.ShutdownTimeout, whose
    /// expiry cancels the token of IHostedService.StopAsync), which always bounds the wait.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; set; } = Timeout.InfiniteTimeSpan;

    /// <summary>Log through the host's ILoggerFactory (category "PgIpc.Supervisor"). Default true; false keeps what ConfigureCluster set.</summary>
    public bool UseHostLogging { get; set; } = true;
}

/// <summary>Options of <see cref="PgIpcChildLifetime"/>, the child-side helper.</summary>
public sealed class PgIpcChildOptions
{
    /// <summary>
    /// The cluster handle to attach when no <see cref="Cluster"/> is registered in the container. Default null: the
    /// PGIPC_CLUSTER environment variable the supervisor sets for its children.
    /// </summary>
    public string? Handle { get; set; }

    /// <summary>How often the helper looks at the supervisor's stop request and at the supervisor's life. Default 100 ms.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(100);
}
