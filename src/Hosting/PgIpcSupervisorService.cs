/*-------------------------------------------------------------------------
 * PgIpcSupervisorService.cs
 *   A PgIpc supervisor that starts and stops with the host.
 *
 * NOTES
 *   StartAsync builds the cluster from the options (ClusterBuilder.Build
 *   creates the shared memory and runs the start-up hooks) and starts the
 *   supervisor's loop; StopAsync shuts it down with the options' mode. The
 *   shutdown is bounded twice: by the options' ShutdownTimeout, and by the
 *   token the host passes to StopAsync, which the host cancels when its
 *   own ShutdownTimeout expires. Either way children still running are
 *   killed and the shared memory destroyed before StopAsync returns: a
 *   host that stops leaves no segment behind (Supervisor.Shutdown with a
 *   deadline token).
 *
 *   The supervisor's Shutdown blocks (it waits for child processes), so it
 *   runs on a thread of its own, not on the host's.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PgIpc.Postmaster;

namespace PgIpc.Hosting;

/// <summary>
/// Runs a PgIpc <see cref="Postmaster.Supervisor"/> with the host: built and started by <see cref="StartAsync"/>,
/// shut down by <see cref="StopAsync"/> (see <see cref="PgIpcSupervisorOptions"/>). Registered by
/// <see cref="PgIpcHostingServiceCollectionExtensions.AddPgIpcSupervisor(Microsoft.Extensions.DependencyInjection.IServiceCollection, Action{PgIpcSupervisorOptions})"/>;
/// resolve it to reach the supervisor.
/// </summary>
public sealed class PgIpcSupervisorService : IHostedService, IDisposable
{
    private readonly PgIpcSupervisorOptions _options;
    private readonly ILoggerFactory? _loggerFactory;
    private Supervisor? _supervisor;

    /// <param name="options">The supervisor's options.</param>
    /// <param name="loggerFactory">The host's logger factory (used unless <see cref="PgIpcSupervisorOptions.UseHostLogging"/> is false).</param>
    public PgIpcSupervisorService(IOptions<PgIpcSupervisorOptions> options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _loggerFactory = loggerFactory;
    }

    /// <summary>The running supervisor; throws <see cref="InvalidOperationException"/> before the host started it.</summary>
    public Supervisor Supervisor => Volatile.Read(ref _supervisor) ?? throw new InvalidOperationException("the PgIpc supervisor has not been started by the host yet");

    /// <summary>Builds the cluster (its shared memory) and starts the supervisor and its static workers.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (_supervisor is not null)
            throw new InvalidOperationException("the PgIpc supervisor service was started already");
        if (string.IsNullOrEmpty(_options.Key))
            throw new OptionsValidationException(nameof(PgIpcSupervisorOptions), typeof(PgIpcSupervisorOptions),
                ["PgIpcSupervisorOptions.Key (the cluster key) is required"]);
        var builder = new ClusterBuilder(_options.Key);
        if (_options.UseHostLogging && _loggerFactory is not null)
            builder.WithLogger(_loggerFactory);
        _options.ConfigureCluster?.Invoke(builder);
        Supervisor s = builder.Build();
        try
        {
            s.Start();
        }
        catch
        {
            s.Dispose();
            throw;
        }
        Volatile.Write(ref _supervisor, s);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Shuts the supervisor down with <see cref="PgIpcSupervisorOptions.ShutdownMode"/>; children still running at
    /// <see cref="PgIpcSupervisorOptions.ShutdownTimeout"/> or when <paramref name="cancellationToken"/> is cancelled
    /// (the host's shutdown timeout) are killed. Shared memory is gone when the task completes.
    /// </summary>
    public Task StopAsync(CancellationToken cancellationToken)
    {
        Supervisor? s = Volatile.Read(ref _supervisor);
        if (s is null)
            return Task.CompletedTask;
        ShutdownMode mode = _options.ShutdownMode;
        TimeSpan timeout = _options.ShutdownTimeout;
        return Task.Factory.StartNew(() => s.Shutdown(mode, timeout, cancellationToken), CancellationToken.None,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Shuts the supervisor down (fast) if the host did not.</summary>
    public void Dispose() => Volatile.Read(ref _supervisor)?.Dispose();
}
