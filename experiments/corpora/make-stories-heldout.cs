#:project ../../src/GpuIntLab.Training/GpuIntLab.Training.csproj
#:property PublishAot=false
// Writes the default experiment's held-out corpus: `dotnet run experiments/corpora/make-stories-heldout.cs`.
// Stories from StoryCorpus with seed 1414 (the embedded model was trained on seed 1; no other seed reaches it),
// about 8,000 characters. stories-heldout.txt: one story a line, to read. stories-heldout.json: the token ids in
// the training stream's own format (each story BOS + ids + EOS, encoded with the model's tokenizer.model), which
// is what experiments/default.json evaluates: text joined by newlines would put line breaks the model never saw
// where it saw EOS/BOS.
using System.Text.Json;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Training;

const ulong Seed = 1414;
const long Characters = 8000;
string here = AppContext.GetData("EntryPointFileDirectoryPath") as string ?? ".";
var tokenizer = LlamaTokenizer.Load(Path.Combine(here, "..", "models", "tinystories-512", "tokenizer.model"));
var stories = StoryCorpus.Generate(Seed, Characters);
File.WriteAllText(Path.Combine(here, "stories-heldout.txt"), string.Join("\n", stories) + "\n");
var ids = stories.SelectMany(s => (int[])[.. tokenizer.Encode(s, addBos: true), tokenizer.EosId]).ToArray();
File.WriteAllText(Path.Combine(here, "stories-heldout.json"), JsonSerializer.Serialize(ids) + "\n");
Console.WriteLine($"{stories.Count} stories, {stories.Sum(s => s.Length)} characters, {ids.Length} tokens");
