/*-------------------------------------------------------------------------
 * PgIpcHostingServiceCollectionExtensions.cs
 *   services.AddPgIpcSupervisor(...) and services.AddPgIpcChild(...).
 *
 * NOTES
 *   The supervisor service is registered once, as itself (so a program
 *   resolves it to reach the Supervisor) and as an IHostedService; its
 *   options are the ordinary options (several Configure calls compose).
 *   The child helper registers the Cluster it watches unless the program
 *   registered one, and itself as a hosted service.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using PgIpc.Postmaster;

namespace PgIpc.Hosting;

/// <summary>Registers PgIpc's hosted services.</summary>
public static class PgIpcHostingServiceCollectionExtensions
{
    /// <summary>
    /// Runs a PgIpc supervisor with the host (<see cref="PgIpcSupervisorService"/>): the cluster <paramref name="key"/>,
    /// configured by <paramref name="configureCluster"/>.
    /// </summary>
    public static IServiceCollection AddPgIpcSupervisor(this IServiceCollection services, string key, Action<ClusterBuilder>? configureCluster = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        return services.AddPgIpcSupervisor(o =>
        {
            o.Key = key;
            if (configureCluster is not null)
                o.ConfigureCluster += configureCluster;
        });
    }

    /// <summary>Runs a PgIpc supervisor with the host (<see cref="PgIpcSupervisorService"/>), configured by <paramref name="configure"/>.</summary>
    public static IServiceCollection AddPgIpcSupervisor(this IServiceCollection services, Action<PgIpcSupervisorOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<PgIpcSupervisorOptions>().Configure(configure);
        if (!services.Any(d => d.ServiceType == typeof(PgIpcSupervisorService)))
        {
            services.AddSingleton<PgIpcSupervisorService>();
            services.AddHostedService(static sp => sp.GetRequiredService<PgIpcSupervisorService>());
        }
        return services;
    }

    /// <summary>
    /// In a child of a PgIpc supervisor: stops the host when the supervisor asks its children to stop or dies
    /// (<see cref="PgIpcChildLifetime"/>). Registers the <see cref="Cluster"/> (attached from
    /// <see cref="PgIpcChildOptions.Handle"/> or PGIPC_CLUSTER) unless one is registered already.
    /// </summary>
    public static IServiceCollection AddPgIpcChild(this IServiceCollection services, Action<PgIpcChildOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        OptionsBuilder<PgIpcChildOptions> options = services.AddOptions<PgIpcChildOptions>();
        if (configure is not null)
            options.Configure(configure);
        services.TryAddSingleton(static sp => Cluster.Attach(sp.GetRequiredService<IOptions<PgIpcChildOptions>>().Value.Handle));
        if (!services.Any(d => d.ServiceType == typeof(PgIpcChildLifetime)))
        {
            services.AddSingleton<PgIpcChildLifetime>();
            services.AddHostedService(static sp => sp.GetRequiredService<PgIpcChildLifetime>());
        }
        return services;
    }
}
