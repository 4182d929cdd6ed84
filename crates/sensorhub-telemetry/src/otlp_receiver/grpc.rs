//! OTLP/gRPC: the official `opentelemetry-proto` tonic services, gzip and
//! zstd accepted, routed by path with axum (tonic's own router needs its
//! `router` feature); tonic's server still provides HTTP/2 and the framing.

use axum::response::Response;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;

use super::MAX_REQUEST_BYTES;
use super::inbox::{Inbox, Protocol};

/// The three `Export` services, and UNIMPLEMENTED for any other.
pub(super) fn router(inbox: &Inbox) -> axum::Router {
    let sink = GrpcSink {
        inbox: inbox.clone(),
    };
    axum::Router::new()
        .route_service(
            &path::<TraceServiceServer<GrpcSink>>(),
            TraceServiceServer::new(sink.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .route_service(
            &path::<MetricsServiceServer<GrpcSink>>(),
            MetricsServiceServer::new(sink.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .route_service(
            &path::<LogsServiceServer<GrpcSink>>(),
            LogsServiceServer::new(sink)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .fallback(unimplemented)
}

/// The implementation of the three OTLP `Export` gRPC services.
#[derive(Debug, Clone)]
struct GrpcSink {
    inbox: Inbox,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.inbox.add(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.inbox.add(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.inbox.add(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The route of every method of the gRPC service `S`.
fn path<S: tonic::server::NamedService>() -> String {
    format!("/{}/{{*method}}", S::NAME)
}

/// The answer to a gRPC call of a service this receiver does not implement.
async fn unimplemented() -> Response {
    tonic::Status::unimplemented("otlp_receiver only implements the OTLP Export services")
        .into_http()
}
