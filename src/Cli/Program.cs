/*-------------------------------------------------------------------------
 * Program.cs
 *   pgipc: the command-line face of PgIpc.
 *
 *     pgipc demo [--backend linux|posix|windows] [--workers N] [--seconds S] [--buffers N] [--pages N] [--crash]
 *     pgipc demo --parallel [--backend name] [--workers N] [--rows N]
 *     pgipc inspect <handle> [--buffers] [--locks]
 *     pgipc cleanup [--backend name] [--dry-run]
 *     pgipc backends
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        try
        {
            string verb = args.Length > 0 ? args[0] : "help";
            string[] rest = args.Length > 0 ? args[1..] : [];
            return verb switch
            {
                "demo" => rest.Contains("--parallel") ? ParallelDemo.Run(rest) : Demo.Run(rest),
                ParallelDemo.ChildVerb => ParallelDemo.RunChild(rest),
                Demo.ChildVerb => Demo.RunChild(rest),
                "inspect" => Inspect.Run(rest),
                "cleanup" => Cleanup.Run(rest),
                "waldump" => WalDumpCommand.Run(rest),
                "backends" => Backends(),
                "help" or "--help" or "-h" => Usage(0),
                _ => Usage(2),
            };
        }
        catch (Exception ex) when (ex is PgIpcException or ArgumentException)
        {
            Console.Error.WriteLine($"pgipc: {ex.Message}");
            return 1;
        }
    }

    private static int Backends()
    {
        foreach (IPgIpcPlatform p in PgIpcPlatform.Available())
            Console.WriteLine(p.Name + (p.Name == PgIpcPlatform.Current.Name ? " (default)" : ""));
        return 0;
    }

    private static int Usage(int code)
    {
        TextWriter w = code == 0 ? Console.Out : Console.Error;
        w.WriteLine("usage: pgipc demo [--backend linux|posix|windows] [--workers N] [--seconds S] [--buffers N] [--pages N] [--crash]");
        w.WriteLine("       pgipc demo --parallel [--backend name] [--workers N] [--rows N]");
        w.WriteLine("       pgipc inspect <handle> [--buffers] [--locks]");
        w.WriteLine("       pgipc cleanup [--backend name] [--dry-run]");
        w.WriteLine("       " + WalDumpCommand.Usage);
        w.WriteLine("       pgipc backends");
        return code;
    }

    /// <summary>The value after <paramref name="name"/> in <paramref name="args"/>, or null.</summary>
    public static string? Option(string[] args, string name)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == name)
            {
                if (i + 1 >= args.Length)
                    throw new ArgumentException($"option {name} needs a value");
                return args[i + 1];
            }
        }
        return null;
    }

    public static IPgIpcPlatform Platform(string[] args)
    {
        string? b = Option(args, "--backend");
        return b is null ? PgIpcPlatform.Current : PgIpcPlatform.Get(b);
    }
}
