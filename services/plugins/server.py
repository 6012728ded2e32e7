"""The gRPC surface of the plugin service: requests in, the pipeline's results out. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from clawdbot.services.plugins import convert, pipeline, streaming, tool_calls
from clawdbot.services.plugins.manager import PluginManager
from clawdbot.services.plugins.types import InputState, ReplyState
from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import plugins_pb2, plugins_pb2_grpc


class PluginsService(plugins_pb2_grpc.PluginsServicer):
    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager

    async def ListPlugins(
        self, request: plugins_pb2.ListPluginsRequest, context: grpc.aio.ServicerContext
    ) -> plugins_pb2.ListPluginsResponse:
        plugins = [
            plugins_pb2.PluginInfo(
                name=p.name,
                kind=p.kind,
                enabled=p.entry.enabled,
                order=p.entry.order,
                timeout_ms=p.entry.timeout_ms,
                on_error=p.entry.on_error,
                source=p.source,
                description=p.description,
            )
            for p in self.manager.current.plugins
        ]
        return plugins_pb2.ListPluginsResponse(plugins=plugins)

    async def Preprocess(
        self, request: plugins_pb2.PreprocessRequest, context: grpc.aio.ServicerContext
    ) -> plugins_pb2.PreprocessResponse:
        if not request.messages or request.messages[-1].role != "user":
            raise InvalidArgument("the last message must be the new user message", field="messages")
        last = request.messages[-1]
        messages = [convert.message_from_pb(m) for m in request.messages]
        state = InputState(
            turn=convert.turn_from_pb(request.turn),
            messages=messages,
            text=messages[-1].content,
            images=list(messages[-1].images),
            client_tools=[convert.tool_from_pb(t, i) for i, t in enumerate(request.tools)],
        )
        async with self.manager.current.use() as plugins:
            result = await pipeline.preprocess(plugins, state)
        response = plugins_pb2.PreprocessResponse(
            user_message=convert.rewritten_user_message(last, result.text),
            context=[convert.context_to_pb(item) for item in result.context],
            tools=[convert.tool_to_pb(tool) for tool in result.tools],
            metadata=result.metadata,
            events=[convert.event_to_pb(e) for e in result.events],
            facts=result.facts,
            instructions=result.instructions,
            outcomes=[convert.outcome_to_pb(o) for o in result.outcomes],
        )
        if result.short_circuit is not None:
            response.short_circuit.CopyFrom(
                plugins_pb2.ShortCircuit(
                    reply=result.short_circuit.reply,
                    plugin=result.short_circuit_plugin,
                    reason=result.short_circuit.reason,
                )
            )
        return response

    async def Postprocess(
        self, request: plugins_pb2.PostprocessRequest, context: grpc.aio.ServicerContext
    ) -> plugins_pb2.PostprocessResponse:
        state = ReplyState(
            convert.turn_from_pb(request.turn),
            request.reply,
            [convert.message_from_pb(m) for m in request.messages],
        )
        async with self.manager.current.use() as plugins:
            result = await pipeline.postprocess(plugins, state)
        return plugins_pb2.PostprocessResponse(
            reply=result.reply,
            events=[convert.event_to_pb(e) for e in result.events],
            outcomes=[convert.outcome_to_pb(o) for o in result.outcomes],
        )

    async def FilterStream(
        self,
        request_iterator: AsyncIterator[plugins_pb2.FilterStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[plugins_pb2.FilterStreamResponse]:
        """Answers only when there is text, events or a stop to send; held-back text comes later."""
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "start":
            raise InvalidArgument("the first message of the stream must be `start`", field="start")
        turn = convert.turn_from_pb(first.start.turn)
        async with self.manager.current.use() as plugins:
            stream = streaming.StreamPipeline(plugins, turn)
            async for item in request_iterator:
                if item.WhichOneof("item") != "delta":
                    raise InvalidArgument("only the first message may be `start`", field="start")
                step = stream.feed(item.delta)
                if step.text or step.events or step.stop:
                    yield plugins_pb2.FilterStreamResponse(
                        delta=step.text, events=[convert.event_to_pb(e) for e in step.events], stop=step.stop
                    )
                if step.stop:
                    break
            tail = await stream.finish()
            if tail.text or tail.events:
                yield plugins_pb2.FilterStreamResponse(
                    delta=tail.text, events=[convert.event_to_pb(e) for e in tail.events], stop=stream.stopped
                )

    async def InvokeTool(
        self, request: plugins_pb2.InvokeToolRequest, context: grpc.aio.ServicerContext
    ) -> plugins_pb2.InvokeToolResponse:
        if not request.call.function.name:
            raise InvalidArgument("a tool call needs a function name", field="call.function.name")
        turn = convert.turn_from_pb(request.turn)
        async with self.manager.current.use() as plugins:
            result = await tool_calls.invoke_tool(
                plugins, turn, request.call.function.name, request.call.function.arguments
            )
        return plugins_pb2.InvokeToolResponse(
            tool_call_id=request.call.id,
            content=result.content,
            is_error=result.is_error,
            plugin=result.plugin,
        )
