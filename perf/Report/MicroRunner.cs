/*-------------------------------------------------------------------------
 * MicroRunner.cs
 *   The report's micro benchmarks: the BenchmarkDotNet classes of perf/,
 *   run in-process by a tight timing loop of our own instead of
 *   BenchmarkDotNet (whose start-up, pilot and out-of-process runs take
 *   about 30 s per class: too slow for a 3-minute --quick report).
 *
 * NOTES
 *   For one [Benchmark] method: make the class, set its [Params] properties,
 *   run its [GlobalSetup]s, call the method until 30 ms have passed
 *   (warm-up, JIT tiering), size a batch of about budget / 5, time 5 batches
 *   and keep the median, per operation (the attribute's
 *   OperationsPerInvoke), then run its [GlobalCleanup]s. No subtraction of
 *   an empty call: we only time the loop methods (1024 operations per call),
 *   where the call costs under 0.01 ns per operation. Classes with an
 *   [IterationSetup] (the allocator, the reset) are not run here.
 *
 *   Every call the runner makes (the [Params] setters, [GlobalSetup],
 *   the benchmark, [GlobalCleanup]) goes through a delegate bound to the
 *   method, never MethodInfo.Invoke or PropertyInfo.SetValue, and the
 *   attributes are read from their metadata (IsDefined,
 *   GetCustomAttributesData), never made (making [Benchmark(
 *   OperationsPerInvoke = n)] sets the property through SetValue). A
 *   reflection call in the timed loop costs tens of ns and a boxed result
 *   per call (the WAL commit returns a ulong: it fell through to Invoke).
 *
 *   And under Wine reflection must not emit. The runtime compiles a
 *   method invoked by reflection a second time into an invoke stub (a
 *   DynamicMethod, "InvokeStub_..."), which dies with its type's
 *   reflection cache (held by a weak handle) at a later GC; under Wine
 *   (8.0, .NET 10.0.12) destroying it kills the process: "Internal CLR
 *   error (0x80131506)" in DynamicResolver+DestroyScout.Finalize, an
 *   access violation in coreclr (+0xFBEE2, reading address 0x20) on the
 *   finalizer thread. Programs with no PgIpc code do it: Invoke of a
 *   method twice then GC.Collect, repeated (3 of 3 runs died under Wine,
 *   0 of 3 with DOTNET_EnableWriteXorExecute=0, 0 of 3 on Linux over 3000
 *   rounds), or one Meter made then GC.Collect (the runtime's
 *   MetricsEventSource reads [EventSource(Name = ...)] twice: 7 of 8 died,
 *   0 of 5 with W^X off); DynamicMethods of their own, made and collected
 *   10,000 times, did not (0 of 4). The report made both kinds of stub
 *   (PgIpcMetrics makes a Meter); the WAL rows made the crash likely, we
 *   think by the full GCs their large allocations bring (a 1 MiB zero-fill
 *   buffer per new segment). So perf's Windows publish runs with
 *   Switch.System.Reflection.ForceInterpretedInvoke (PgIpc.Perf.csproj;
 *   the tests' has DynamicCodeSupport=false for the same fault):
 *   reflection then calls the method without a stub.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Reflection;
using BenchmarkDotNet.Attributes;

namespace PgIpc.Perf.Report;

internal static class MicroRunner
{
    /// <summary>Nanoseconds per operation of each of <paramref name="methods"/> of <paramref name="type"/>, measured on one instance.</summary>
    public static Dictionary<string, double> Measure(Type type, IReadOnlyDictionary<string, object> parameters, string[] methods, double budgetSeconds)
    {
        object instance = Activator.CreateInstance(type) ?? throw new InvalidOperationException($"cannot make {type.Name}");
        foreach ((string name, object value) in parameters)
        {
            PropertyInfo p = type.GetProperty(name) ?? throw new InvalidOperationException($"{type.Name} has no property {name}");
            MethodInfo set = p.SetMethod ?? throw new InvalidOperationException($"{type.Name}.{name} has no setter");
            Bound<Action<object, MethodInfo, object>>(nameof(SetProperty), p.PropertyType)(instance, set, value);
        }
        MethodInfo[] all = type.GetMethods(BindingFlags.Public | BindingFlags.Instance);
        foreach (MethodInfo m in all.Where(m => m.IsDefined(typeof(GlobalSetupAttribute))))
            Void(instance, m)();
        var result = new Dictionary<string, double>();
        try
        {
            foreach (string name in methods)
            {
                MethodInfo m = type.GetMethod(name) ?? throw new InvalidOperationException($"{type.Name} has no method {name}");
                int ops = OperationsPerInvoke(m);
                Action call = AsAction(instance, m);
                result[name] = TimeLoop(call, ops, budgetSeconds);
            }
        }
        finally
        {
            foreach (MethodInfo m in all.Where(m => m.IsDefined(typeof(GlobalCleanupAttribute))))
                Void(instance, m)();
        }
        return result;
    }

    private static long s_sink;

    /// <summary>
    /// [Benchmark(OperationsPerInvoke = n)]'s n (1 when not given), read from the attribute's metadata: GetCustomAttribute
    /// would make the attribute and set its named properties through PropertyInfo.SetValue (see the banner).
    /// </summary>
    private static int OperationsPerInvoke(MethodInfo m)
    {
        foreach (CustomAttributeData a in m.GetCustomAttributesData())
        {
            if (a.AttributeType != typeof(BenchmarkAttribute))
                continue;
            foreach (CustomAttributeNamedArgument n in a.NamedArguments)
            {
                if (n.MemberName == nameof(BenchmarkAttribute.OperationsPerInvoke))
                    return (int)n.TypedValue.Value!;
            }
        }
        return 1;
    }

    /// <summary>The parameterless void method <paramref name="m"/> of <paramref name="instance"/> as a delegate (see the banner: not Invoke).</summary>
    private static Action Void(object instance, MethodInfo m) => (Action)Delegate.CreateDelegate(typeof(Action), instance, m);

    /// <summary>The generic helper <paramref name="name"/> of this class made for <paramref name="t"/>, as a delegate of type <typeparamref name="TDelegate"/>.</summary>
    private static TDelegate Bound<TDelegate>(string name, Type t) where TDelegate : Delegate
        => (TDelegate)Delegate.CreateDelegate(typeof(TDelegate),
            (typeof(MicroRunner).GetMethod(name, BindingFlags.NonPublic | BindingFlags.Static) ?? throw new MissingMethodException(nameof(MicroRunner), name)).MakeGenericMethod(t));

    /// <summary>Calls the setter <paramref name="set"/> of <paramref name="instance"/> with <paramref name="value"/> through a delegate.</summary>
    private static void SetProperty<T>(object instance, MethodInfo set, object value)
        => ((Action<T>)Delegate.CreateDelegate(typeof(Action<T>), instance, set))((T)value);

    /// <summary>Where results of other types go (a store of the value itself: no boxing).</summary>
    private static class Sink<T>
    {
        public static T? Value;
    }

    /// <summary>A method returning <typeparamref name="T"/> as an Action whose result goes to <see cref="Sink{T}"/>.</summary>
    private static Action StoreResult<T>(object instance, MethodInfo m)
    {
        var f = (Func<T>)Delegate.CreateDelegate(typeof(Func<T>), instance, m);
        return () => Sink<T>.Value = f();
    }

    /// <summary>The method as an Action; a result goes to a sink so it is not optimised away.</summary>
    private static Action AsAction(object instance, MethodInfo m)
    {
        if (m.ReturnType == typeof(void))
            return Void(instance, m);
        if (m.ReturnType == typeof(long))
        {
            var f = (Func<long>)Delegate.CreateDelegate(typeof(Func<long>), instance, m);
            return () => s_sink ^= f();
        }
        if (m.ReturnType == typeof(int))
        {
            var f = (Func<int>)Delegate.CreateDelegate(typeof(Func<int>), instance, m);
            return () => s_sink ^= f();
        }
        if (m.ReturnType == typeof(bool))
        {
            var f = (Func<bool>)Delegate.CreateDelegate(typeof(Func<bool>), instance, m);
            return () => s_sink ^= f() ? 1 : 0;
        }
        if (m.ReturnType == typeof(double))
        {
            var f = (Func<double>)Delegate.CreateDelegate(typeof(Func<double>), instance, m);
            return () => s_sink ^= (long)f();
        }
        return Bound<Func<object, MethodInfo, Action>>(nameof(StoreResult), m.ReturnType)(instance, m);
    }

    private static double TimeLoop(Action call, int ops, double budgetSeconds)
    {
        long warmEnd = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 30 / 1000;
        long calls = 0;
        while (Stopwatch.GetTimestamp() < warmEnd || calls < 3)
        {
            call();
            calls++;
        }
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < 3; i++)
            call();
        double perCall = Math.Max(Stopwatch.GetElapsedTime(t0).TotalSeconds / 3, 1e-9);
        long batch = Math.Max(1, (long)(budgetSeconds / 5 / perCall));
        var ns = new double[5];
        for (int s = 0; s < ns.Length; s++)
        {
            long t1 = Stopwatch.GetTimestamp();
            for (long i = 0; i < batch; i++)
                call();
            ns[s] = Stopwatch.GetElapsedTime(t1).TotalNanoseconds / (batch * (double)ops);
        }
        return Stats.Median(ns);
    }
}
