"""The AutoAnnotator graph (paper figure 3): wiring only, the nodes live in agent.pipeline.nodes."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from agent.pipeline import nodes
from agent.pipeline.state import RunState


def build_graph() -> StateGraph:
    graph = StateGraph(RunState, context_schema=nodes.Services)
    # Meta-controller layer: pick the SLMs, map their labels, write and deploy their scripts.
    graph.add_node("select_models", nodes.select_models)
    graph.add_node("align_labels", nodes.align_labels)
    graph.add_node("write_scripts", nodes.write_pipeline_scripts)
    # Task-specialist layer: committee votes, routing, review, continual fine-tuning.
    graph.add_node("annotate", nodes.annotate)
    graph.add_node("vote_and_route", nodes.vote_and_route)
    graph.add_node("review", nodes.review)
    graph.add_node("finetune", nodes.finetune)
    graph.add_node("report", nodes.report)

    graph.add_edge(START, "select_models")
    graph.add_edge("select_models", "align_labels")
    graph.add_edge("align_labels", "write_scripts")
    graph.add_conditional_edges("write_scripts", nodes.after_scripts, ["annotate", "report"])
    graph.add_edge("annotate", "vote_and_route")
    graph.add_edge("vote_and_route", "review")
    graph.add_conditional_edges("review", nodes.after_review, ["finetune", "annotate", "report"])
    graph.add_conditional_edges("finetune", nodes.after_scripts, ["annotate", "report"])
    graph.add_edge("report", END)
    return graph
