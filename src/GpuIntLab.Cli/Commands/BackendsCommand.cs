using System.CommandLine;
using GpuIntLab.Backends;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab backends</c>: every backend, its schemes, and whether it can run here (and why not).</summary>
public static class BackendsCommand
{
    public static Command Create()
    {
        var accelerator = new Option<string>("--accelerator") { Description = "auto, cpu or cuda", DefaultValueFactory = _ => "auto" };
        var json = new Option<bool>("--json") { Description = "print every backend with its schemes and KV-cache formats as JSON" };
        var command = new Command("backends", "List backends with their schemes and availability on this machine.") { accelerator, json };
        command.SetAction(parse =>
        {
            string acc = parse.GetValue(accelerator)!;
            if (acc is not ("auto" or "cpu" or "cuda")) throw new UserInputException($"--accelerator: unknown accelerator '{acc}' (known: auto, cpu, cuda)");
            if (parse.GetValue(json))
            {
                Console.WriteLine(BackendsJson.Render(acc));
                return 0;
            }
            foreach (var p in BackendCatalog.All)
            {
                var a = p.CheckAvailability(acc);
                Console.WriteLine($"{p.Name,-14} {(a.IsAvailable ? "available" : "unavailable"),-12} schemes: {string.Join(", ", p.Schemes)}");
                Console.WriteLine($"{"",-14} {p.Description}; {(a.IsAvailable ? a.Reason : "reason: " + a.Reason)}");
            }
            return 0;
        });
        return command;
    }
}
