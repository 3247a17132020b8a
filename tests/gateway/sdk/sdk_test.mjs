// sdk_test.mjs - the official `openai` npm package against a running
// gateway: a plain completion, a streamed one, one with tools, the model
// list, and the SDK's error classes for a wrong key and an unknown model.
// Environment: AIROUTER_BASE_URL (".../v1"), AIROUTER_KEY.
// Prints one line per check and "N passed, N failed"; exits 1 on failure.
import OpenAI from 'openai';

const baseURL = process.env.AIROUTER_BASE_URL;
const apiKey = process.env.AIROUTER_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 10000 });
let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const messages = [{ role: 'user', content: 'Say hello.' }];

await check('plain completion', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'fast', messages })
    .withResponse();
  assert(data.object === 'chat.completion', `object ${data.object}`);
  assert(data.choices[0].message.content.includes('tok0'), 'content');
  assert(data.usage.completion_tokens > 0, 'usage');
  assert(response.headers.get('x-request-id').startsWith('air-'), 'x-request-id');
  assert(response.headers.get('x-airouter-provider') === 'mock', 'x-airouter-provider');
  assert(response.headers.get('x-airouter-attempts') === '1', 'x-airouter-attempts');
});

await check('streamed completion', async () => {
  const stream = await client.chat.completions.create({
    model: 'fast', messages, stream: true, stream_options: { include_usage: true },
  });
  let text = '', chunks = 0, usage = null;
  for await (const chunk of stream) {
    chunks++;
    assert(chunk.object === 'chat.completion.chunk', `object ${chunk.object}`);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) text += c.delta?.content ?? '';
  }
  assert(chunks >= 3, `chunks ${chunks}`);
  assert(text.startsWith('tok0 tok1'), `text ${text}`);
  assert(usage && usage.completion_tokens > 0, 'usage chunk');
});

await check('request with tools', async () => {
  const r = await client.chat.completions.create({
    model: 'fast',
    messages: [{ role: 'user', content: 'Weather in Oslo?' }],
    tools: [{
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'Current weather',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    }],
    tool_choice: 'auto',
  });
  assert(r.choices.length === 1, 'one choice');
  assert(['stop', 'tool_calls'].includes(r.choices[0].finish_reason), r.choices[0].finish_reason);
});

await check('streamed request with tools', async () => {
  const stream = await client.chat.completions.create({
    model: 'fast', messages, stream: true,
    tools: [{ type: 'function', function: { name: 'noop', parameters: { type: 'object' } } }],
  });
  let n = 0;
  for await (const _ of stream) n++;
  assert(n >= 1, 'chunks');
});

await check('model list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert(ids.includes('fast'), `ids ${ids}`);
  const one = await client.models.retrieve('fast');
  assert(one.id === 'fast', 'retrieve');
});

await check('wrong key is an AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'sk-wrong', maxRetries: 0 });
  try {
    await bad.chat.completions.create({ model: 'fast', messages });
    throw new Error('no error');
  } catch (e) {
    assert(e instanceof OpenAI.AuthenticationError, `got ${e}`);
    assert(e.status === 401, `status ${e.status}`);
  }
});

await check('unknown model is a NotFoundError', async () => {
  try {
    await client.chat.completions.create({ model: 'nope', messages });
    throw new Error('no error');
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, `got ${e}`);
    assert(String(e.message).includes('nope'), e.message);
  }
});

await check('bad request is a BadRequestError naming the field', async () => {
  try {
    await client.chat.completions.create({ model: 'fast', messages: 'hello' });
    throw new Error('no error');
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, `got ${e}`);
    assert(e.param === 'messages', `param ${e.param}`);
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
