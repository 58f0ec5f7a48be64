/*-------------------------------------------------------------------------
 * PgIpcPlatform.cs
 *   Chooses the OS backend.
 *
 * NOTES
 *   The platform projects reference Core, so Core cannot reference them.
 *   We chose the "pluggable" way: Core loads a backend's assembly by name
 *   at run time (PgIpc.Platform.Linux, .Windows, .Posix) and instantiates the
 *   type the assembly names in its [assembly: PgIpcPlatform(typeof(...))]
 *   attribute. A user ships only the backends they need, Core stays free of
 *   OS checks (each backend answers IsSupported itself), and a test can ask
 *   for a specific backend (Posix on Linux) by name. An application that
 *   trims or wants no reflection calls Register with an instance instead.
 *
 *   Order when nothing is asked for: the PGIPC_BACKEND environment variable,
 *   then linux, windows, posix: the first that is present and supported.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.CodeAnalysis;
using System.Reflection;

namespace PgIpc.Platform;

/// <summary>Names the <see cref="IPgIpcPlatform"/> type a backend assembly provides.</summary>
[AttributeUsage(AttributeTargets.Assembly, AllowMultiple = false)]
public sealed class PgIpcPlatformAttribute : Attribute
{
    /// <summary>The backend's <see cref="IPgIpcPlatform"/> type, created with its public parameterless constructor.</summary>
    [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicParameterlessConstructor)]
    public Type PlatformType { get; }

    /// <summary>Names <paramref name="platformType"/> as the assembly's backend.</summary>
    public PgIpcPlatformAttribute(
        [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicParameterlessConstructor)] Type platformType)
        => PlatformType = platformType;
}

/// <summary>Finds and caches the OS backends.</summary>
public static class PgIpcPlatform
{
    /// <summary>Backend names in the order the selector tries them.</summary>
    public static readonly IReadOnlyList<string> KnownBackends = ["linux", "windows", "posix"];

    private static readonly Lock s_lock = new();
    private static readonly Dictionary<string, IPgIpcPlatform?> s_loaded = new(StringComparer.Ordinal);
    private static IPgIpcPlatform? s_current;

    /// <summary>The backend for this machine (or the one PGIPC_BACKEND names).</summary>
    public static IPgIpcPlatform Current
    {
        get
        {
            IPgIpcPlatform? current = Volatile.Read(ref s_current);
            return current ?? SelectCurrent();
        }
    }

    /// <summary>The named backend ("linux", "posix", "windows"). Throws when it is absent or unsupported here.</summary>
    public static IPgIpcPlatform Get(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        IPgIpcPlatform? p = TryLoad(name);
        if (p is null)
            throw new PgIpcException($"PgIpc backend '{name}' is not available: assembly {AssemblyNameOf(name)} was not found next to the application");
        if (!p.IsSupported)
            throw new PgIpcException($"PgIpc backend '{name}' is not supported on this machine");
        return p;
    }

    /// <summary>Every backend that is present and supported here, in selector order.</summary>
    public static IReadOnlyList<IPgIpcPlatform> Available()
    {
        List<IPgIpcPlatform> list = [];
        foreach (string name in KnownBackends)
        {
            IPgIpcPlatform? p = TryLoad(name);
            if (p is not null && p.IsSupported)
                list.Add(p);
        }
        return list;
    }

    /// <summary>Registers a backend instance explicitly (for trimmed applications, or a custom backend).</summary>
    public static void Register(IPgIpcPlatform platform)
    {
        ArgumentNullException.ThrowIfNull(platform);
        lock (s_lock)
            s_loaded[platform.Name] = platform;
    }

    private static IPgIpcPlatform SelectCurrent()
    {
        lock (s_lock)
        {
            if (s_current is not null)
                return s_current;
            string? forced = Environment.GetEnvironmentVariable("PGIPC_BACKEND");
            IPgIpcPlatform? chosen = null;
            if (!string.IsNullOrEmpty(forced))
            {
                chosen = Get(forced.Trim().ToLowerInvariant());
            }
            else
            {
                foreach (string name in KnownBackends)
                {
                    IPgIpcPlatform? p = TryLoad(name);
                    if (p is not null && p.IsSupported)
                    {
                        chosen = p;
                        break;
                    }
                }
            }
            if (chosen is null)
                throw new PgIpcException("no PgIpc backend supports this machine: none of PgIpc.Platform.Linux, .Windows, .Posix was found or supported");
            Volatile.Write(ref s_current, chosen);
            return chosen;
        }
    }

    private static string AssemblyNameOf(string name) => name switch
    {
        "linux" => "PgIpc.Platform.Linux",
        "posix" => "PgIpc.Platform.Posix",
        "windows" => "PgIpc.Platform.Windows",
        _ => throw new ArgumentException($"unknown PgIpc backend '{name}'; expected one of: {string.Join(", ", KnownBackends)}", nameof(name)),
    };

    // The backends are found by name at run time, so the trimmer (and NativeAOT) sees no reference to them: these keep
    // each backend's platform type and its constructor in a trimmed application that references the backend's assembly
    // (the PgIpc package references all three). An assembly the application does not ship is simply absent, as before.
    [DynamicDependency(DynamicallyAccessedMemberTypes.PublicParameterlessConstructor, "PgIpc.Platform.Linux.LinuxPlatform", "PgIpc.Platform.Linux")]
    [DynamicDependency(DynamicallyAccessedMemberTypes.PublicParameterlessConstructor, "PgIpc.Platform.Posix.PosixPlatform", "PgIpc.Platform.Posix")]
    [DynamicDependency(DynamicallyAccessedMemberTypes.PublicParameterlessConstructor, "PgIpc.Platform.Windows.WindowsPlatform", "PgIpc.Platform.Windows")]
    [UnconditionalSuppressMessage("Trimming", "IL2072", Justification = "The attribute's type carries DynamicallyAccessedMembers.")]
    private static IPgIpcPlatform? TryLoad(string name)
    {
        string asmName = AssemblyNameOf(name);
        lock (s_lock)
        {
            if (s_loaded.TryGetValue(name, out IPgIpcPlatform? cached))
                return cached;
            IPgIpcPlatform? platform = null;
            try
            {
                Assembly asm = Assembly.Load(new AssemblyName(asmName));
                PgIpcPlatformAttribute? attr = asm.GetCustomAttribute<PgIpcPlatformAttribute>();
                if (attr is null)
                    throw new PgIpcException($"assembly {asmName} has no [assembly: PgIpcPlatform(...)] attribute");
                platform = (IPgIpcPlatform)Activator.CreateInstance(attr.PlatformType)!;
            }
            catch (FileNotFoundException)
            {
                platform = null;
            }
            s_loaded[name] = platform;
            return platform;
        }
    }
}
