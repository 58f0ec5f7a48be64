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
            (type.GetProperty(name) ?? throw new InvalidOperationException($"{type.Name} has no property {name}")).SetValue(instance, value);
        MethodInfo[] all = type.GetMethods(BindingFlags.Public | BindingFlags.Instance);
        foreach (MethodInfo m in all.Where(m => m.GetCustomAttribute<GlobalSetupAttribute>() is not null))
            m.Invoke(instance, null);
        var result = new Dictionary<string, double>();
        try
        {
            foreach (string name in methods)
            {
                MethodInfo m = type.GetMethod(name) ?? throw new InvalidOperationException($"{type.Name} has no method {name}");
                int ops = m.GetCustomAttribute<BenchmarkAttribute>()?.OperationsPerInvoke ?? 1;
                Action call = AsAction(instance, m);
                result[name] = TimeLoop(call, ops, budgetSeconds);
            }
        }
        finally
        {
            foreach (MethodInfo m in all.Where(m => m.GetCustomAttribute<GlobalCleanupAttribute>() is not null))
                m.Invoke(instance, null);
        }
        return result;
    }

    private static long s_sink;

    /// <summary>The method as an Action; a result (long, int, bool, double) goes to a sink so it is not optimised away.</summary>
    private static Action AsAction(object instance, MethodInfo m)
    {
        if (m.ReturnType == typeof(void))
            return (Action)Delegate.CreateDelegate(typeof(Action), instance, m);
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
        return () => m.Invoke(instance, null);
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
