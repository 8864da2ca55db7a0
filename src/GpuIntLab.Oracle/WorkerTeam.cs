using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace GpuIntLab.Oracle;

/// <summary>
/// Runs the parts of one parallel pass on the calling thread plus a team of persistent workers. A decode step is
/// about ninety short passes (q/k/v, o, gate/up, down per layer); a thread-pool loop pays a wake-up and a scheduling
/// round trip for each, which on this lab's 2-core machine cost more than a tenth of the step. The workers here spin
/// for a while after each pass (the next one comes within a millisecond during decoding) and only then sleep.
/// One pass at a time: a caller that finds the team busy (another engine on another thread) or asks for a different
/// thread count gets a plain <see cref="Parallel.For(int, int, ParallelOptions, Action{int})"/>.
/// An exception thrown by a part is rethrown on the calling thread as itself, not wrapped.
/// </summary>
internal sealed class WorkerTeam
{
    private static readonly Lazy<WorkerTeam> s_shared = new(() => new WorkerTeam(Environment.ProcessorCount - 1));

    /// <summary>The process's team: one worker per core beyond the caller's.</summary>
    public static WorkerTeam Shared => s_shared.Value;

    private static readonly long SpinTicks = Stopwatch.Frequency / 1000; // spin 1 ms before sleeping

    private readonly object _runLock = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly int _workers;
    private Action<int>? _body;
    private int _parts, _next, _pending, _sleepers;
    private long _generation;
    private ExceptionDispatchInfo? _error;

    private WorkerTeam(int workers)
    {
        _workers = Math.Max(0, workers);
        for (int i = 0; i < _workers; i++)
            new Thread(WorkerLoop) { IsBackground = true, Name = $"oracle worker {i + 1}" }.Start();
    }

    /// <summary>Calls body(part) for every part in [0, parts) on <paramref name="threads"/> threads, the caller's included.</summary>
    public void Run(int parts, int threads, Action<int> body)
    {
        if (threads <= 1 || parts <= 1)
        {
            for (int p = 0; p < parts; p++) body(p);
            return;
        }
        // A pass started from inside a pass (Monitor is reentrant) or while another is running takes the thread pool.
        if (threads != _workers + 1 || Monitor.IsEntered(_runLock) || !Monitor.TryEnter(_runLock))
        {
            try { Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads }, body); }
            catch (AggregateException e) when (e.InnerExceptions.Count == 1) { ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw(); }
            return;
        }
        try
        {
            _body = body;
            _parts = parts;
            _error = null;
            Volatile.Write(ref _next, 0);
            Volatile.Write(ref _pending, _workers);
            Interlocked.Increment(ref _generation);                  // publishes the job (full fence)
            int sleepers = Interlocked.Exchange(ref _sleepers, 0);
            if (sleepers > 0) _wake.Release(sleepers);
            TakeParts();
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) != 0) spin.SpinOnce(sleep1Threshold: -1);
            _body = null;
            _error?.Throw();
        }
        finally { Monitor.Exit(_runLock); }
    }

    private void TakeParts()
    {
        var body = _body!;
        int parts = _parts;
        for (int p; (p = Interlocked.Increment(ref _next) - 1) < parts;)
        {
            try { body(p); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null); }
        }
    }

    private void WorkerLoop()
    {
        long seen = 0;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            var spin = new SpinWait();
            while (Volatile.Read(ref _generation) == seen)
            {
                if (Stopwatch.GetTimestamp() - start < SpinTicks) { spin.SpinOnce(sleep1Threshold: -1); continue; }
                // Sleep. Counted before the re-check, so a job published after the check finds this worker counted
                // and releases it; a release that arrives after the re-check saw the job only wakes it once spuriously.
                Interlocked.Increment(ref _sleepers);
                if (Volatile.Read(ref _generation) == seen) _wake.Wait();
                start = Stopwatch.GetTimestamp();
            }
            seen = Volatile.Read(ref _generation);
            TakeParts();
            Interlocked.Decrement(ref _pending);
        }
    }
}
