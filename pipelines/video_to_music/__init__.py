from .pipeline_video_to_music import VideoToMusicPipeline, VideoToMusicPipelineOutput

__all__ = ["VideoToMusicPipeline", "VideoToMusicPipelineOutput"]
